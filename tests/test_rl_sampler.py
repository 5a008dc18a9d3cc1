"""The batched sampler, episodes/advantages and the policy's task batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.core import expand_to_tasks, get_params, single_forward
from metarl.envs import BatchedNavigation2D, Navigation2DEnv
from metarl.rl.baseline import LinearFeatureBaseline
from metarl.rl.episodes import with_advantages
from metarl.rl.evaluate import navigation_oracle
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.returns import discounted_returns
from metarl.rl.sampler import rollout, sample_episodes

N_TASKS, EPISODES, HORIZON = 3, 4, 12


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=[8], init_std=0.5)
    env = BatchedNavigation2D(N_TASKS * EPISODES, horizon=HORIZON)
    tasks = env.sample_tasks(N_TASKS, np.random.default_rng(seed))
    params = expand_to_tasks(get_params(policy), N_TASKS)
    return policy, env, tasks, params


def test_shapes_masks_and_padding() -> None:
    policy, env, tasks, params = _setup()
    gen = torch.Generator().manual_seed(0)
    episodes = sample_episodes(env, tasks, EPISODES, policy, params, gen)
    steps = episodes.rewards.shape[0]
    assert steps <= HORIZON
    assert episodes.observations.shape == (steps, N_TASKS, EPISODES, 2)
    assert episodes.actions.shape == (steps, N_TASKS, EPISODES, 2)
    assert episodes.rewards.shape == episodes.masks.shape == (steps, N_TASKS, EPISODES)
    assert episodes.returns is None and episodes.advantages is None
    masks = episodes.masks
    assert bool(((masks == 0) | (masks == 1)).all()) and bool((masks[0] == 1).all())
    assert not bool((masks[1:] > masks[:-1]).any()), "masks must be 1 then 0 in each column"
    assert bool((episodes.rewards[masks == 0] == 0).all())
    assert bool((episodes.rewards[masks == 1] < 0).all())  # minus a distance
    # Every observation starts at the origin.
    assert bool((episodes.observations[0] == 0).all())


def test_episodes_follow_the_single_environment() -> None:
    """Replaying the sampled actions in the gymnasium env gives the same rewards and lengths."""
    policy, env, tasks, params = _setup(1)
    episodes = sample_episodes(env, tasks, EPISODES, policy, params, torch.Generator())
    for i in (0, N_TASKS - 1):
        single = Navigation2DEnv(horizon=HORIZON, task=tasks[i])
        single.reset(seed=0)
        for t in range(int(episodes.masks[:, i, 1].sum())):
            obs, reward, terminated, truncated, _ = single.step(episodes.actions[t, i, 1].numpy())
            assert reward == pytest.approx(float(episodes.rewards[t, i, 1]), rel=1e-6)
        assert terminated or truncated


def test_fixed_seed_reproduces_the_episodes() -> None:
    policy, env, tasks, params = _setup()
    a = sample_episodes(env, tasks, EPISODES, policy, params, torch.Generator().manual_seed(7))
    b = sample_episodes(env, tasks, EPISODES, policy, params, torch.Generator().manual_seed(7))
    c = sample_episodes(env, tasks, EPISODES, policy, params, torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert x is None and y is None or torch.equal(x, y)
    assert not torch.equal(a.actions[0], c.actions[0])


def test_each_task_uses_its_own_parameters() -> None:
    policy, env, tasks, params = _setup()
    shifted = {n: p.clone() for n, p in params.items()}
    shifted["mean.2.bias"][1] += 100.0  # task 1's mean action is pushed far to +x, +y
    episodes = sample_episodes(env, tasks, EPISODES, policy, shifted, torch.Generator())
    assert bool((episodes.actions[:, 1] > 50).all())
    assert bool((episodes.actions[0, 0].abs() < 50).all())


def test_policy_task_batch_equals_each_task_alone() -> None:
    policy, _, _, _ = _setup()
    params = {
        n: p.detach() + 0.1 * torch.randn(N_TASKS, *p.shape) for n, p in get_params(policy).items()
    }
    obs = torch.randn(5, N_TASKS, 2, 2)  # (T, n_tasks, E, obs_dim)
    dist = policy.distribution(params, obs, task_dim=1)
    assert dist.batch_shape == (5, N_TASKS, 2) and dist.event_shape == (2,)
    for i in range(N_TASKS):
        mean, log_std = single_forward(policy, {n: p[i] for n, p in params.items()}, obs[:, i])
        torch.testing.assert_close(dist.base_dist.loc[:, i], mean)
        torch.testing.assert_close(dist.base_dist.scale[:, i], log_std.exp())


def test_advantages_are_normalised_per_task() -> None:
    policy, env, tasks, params = _setup()
    episodes = sample_episodes(env, tasks, EPISODES, policy, params, torch.Generator())
    filled = with_advantages(episodes, LinearFeatureBaseline(), 0.9, 1.0)
    assert filled.advantages is not None and filled.returns is not None
    assert episodes.advantages is None  # the input is left alone
    steps = episodes.rewards.shape[0]
    flat = (steps, N_TASKS * EPISODES)
    expected_returns = discounted_returns(
        episodes.rewards.reshape(flat), episodes.masks.reshape(flat), 0.9
    )
    torch.testing.assert_close(filled.returns, expected_returns.reshape(episodes.rewards.shape))
    for i in range(N_TASKS):
        valid = filled.advantages[:, i][episodes.masks[:, i] == 1]
        assert float(valid.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(valid.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_navigation_oracle_is_the_worked_example() -> None:
    env = BatchedNavigation2D(2, horizon=100)
    tasks = [{"goal": np.array([0.25, -0.05])}, {"goal": np.array([-0.5, 0.5])}]
    episodes = rollout(env, tasks, 1, navigation_oracle(env, tasks))
    # Goal (0.25, -0.05): positions (0.1, -0.05), (0.2, -0.05), (0.25, -0.05): distances
    # 0.15, 0.05, 0 (terminated). Goal (-0.5, 0.5): the diagonal, 5 steps at 0.1·√2 each.
    expected = [-0.2, -np.sqrt(2) * (0.4 + 0.3 + 0.2 + 0.1)]
    np.testing.assert_allclose(episodes.episode_returns()[:, 0].numpy(), expected, atol=1e-5)
    assert episodes.masks[:, 0, 0].sum() == 3 and episodes.masks[:, 1, 0].sum() == 5
