"""The batched sampler, episodes/advantages and the policy's task batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.core import expand_to_tasks, get_params, single_forward
from metarl.envs import BatchedNavigation2D, Navigation2DEnv
from metarl.experiments import load_config
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


def _numpy_features(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[o, o², s, s², s³, 1]`` with ``s = t / 100`` and ``o`` clipped to ±10 (rllab's linear
    feature baseline), one row per valid step, episode by episode (loops, numpy)."""
    rows = []
    for e in range(observations.shape[1]):
        for t in range(int(masks[:, e].sum())):
            o, s = np.clip(observations[t, e], -10.0, 10.0), t / 100.0
            rows.append(np.concatenate([o, o * o, [s, s * s, s**3, 1.0]]))
    return np.array(rows)


def _loop_gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> list[float]:
    """``A_t = Σ_k (γλ)^k δ_{t+k}``, ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)``, over one episode
    whose value after its last step is 0."""
    next_values = [*values[1:], 0.0]
    deltas = [r + gamma * nv - v for r, nv, v in zip(rewards, next_values, values, strict=True)]
    return [
        sum((gamma * lam) ** k * deltas[t + k] for k in range(len(deltas) - t))
        for t in range(len(deltas))
    ]


def _numpy_advantages(
    observations: np.ndarray, rewards: np.ndarray, masks: np.ndarray, gamma: float, lam: float,
    reg: float,
) -> np.ndarray:  # fmt: skip
    """Advantages ``(T, E)`` of one task's ``E`` episodes, written from the papers in numpy.

    Finn et al. (2017, Sec. 5.3) use "the standard linear feature baseline proposed by Duan et
    al. (2016), which is fitted separately at each iteration for each sampled task": a ridge
    regression (coefficient ``reg``) of the discounted returns on the features of the task's
    own valid steps, solved here as least squares on the augmented system ``[X; √reg I]``.
    Advantages are GAE (Schulman et al. 2016) with that baseline as V and no bootstrap after an
    episode's last step (pytorch-maml-rl's convention), and 0 on padding.
    """
    lengths = masks.sum(axis=0).astype(int)
    returns = np.zeros_like(rewards, dtype=np.float64)
    for e, length in enumerate(lengths):
        running = 0.0
        for t in reversed(range(length)):
            running = rewards[t, e] + gamma * running
            returns[t, e] = running
    x = _numpy_features(observations, masks)
    y = np.concatenate([returns[:length, e] for e, length in enumerate(lengths)])
    n_features = x.shape[1]
    weights = np.linalg.lstsq(
        np.vstack([x, np.sqrt(reg) * np.eye(n_features)]),
        np.concatenate([y, np.zeros(n_features)]),
        rcond=None,
    )[0]
    values = np.split(x @ weights, np.cumsum(lengths)[:-1])
    advantages = np.zeros_like(returns)
    for e, length in enumerate(lengths):
        advantages[:length, e] = _loop_gae(rewards[:length, e], values[e], gamma, lam)
    return advantages


def _end_some_episodes_early(episodes, seed: int):
    """``episodes`` with some cut short, as an environment that terminated them would leave
    them: mask and reward 0 after the end (the observations there are left: they must not
    count)."""
    steps = episodes.rewards.shape[0]
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, steps + 1, episodes.rewards.shape[1:], generator=gen)
    lengths[:, 0] = steps  # one full-length episode per task
    alive = (torch.arange(steps).reshape(-1, 1, 1) < lengths).to(torch.float32)
    return episodes._replace(rewards=episodes.rewards * alive, masks=episodes.masks * alive)


@pytest.mark.parametrize("gamma_lambda", [None, (0.9, 0.5)], ids=["config", "lambda-0.5"])
def test_advantages_are_gae_of_the_per_task_linear_baseline(gamma_lambda) -> None:
    """Unnormalised advantages, task by task, against :func:`_numpy_advantages` (the config's
    γ 0.99 and λ 1 of the paper's 2D navigation, and a λ < 1 where GAE is more than returns
    minus values); the normalised ones are the same standardised over each task's valid steps.
    Some episodes end early, so the baseline is fitted on, and GAE stops at, each one's end."""
    config = load_config("navigation", [])
    gamma, lam = gamma_lambda or (config.gamma, config.gae_lambda)
    policy, env, tasks, params = _setup(4)
    sampled = sample_episodes(
        env, tasks, EPISODES, policy, params, torch.Generator().manual_seed(4)
    )
    episodes = _end_some_episodes_early(sampled, 4)
    baseline = LinearFeatureBaseline(config.baseline_reg)
    raw = with_advantages(episodes, baseline, gamma, lam, normalize=False).advantages
    normalised = with_advantages(episodes, baseline, gamma, lam).advantages
    assert raw is not None and normalised is not None
    for i in range(N_TASKS):
        obs, rewards, masks = (
            x[:, i].double().numpy()
            for x in (episodes.observations, episodes.rewards, episodes.masks)
        )
        expected = _numpy_advantages(obs, rewards, masks, gamma, lam, config.baseline_reg)
        np.testing.assert_allclose(raw[:, i].numpy(), expected, rtol=1e-5, atol=1e-5)
        valid = expected[masks == 1]
        standardised = np.where(masks == 1, (expected - valid.mean()) / valid.std(), 0.0)
        np.testing.assert_allclose(normalised[:, i].numpy(), standardised, rtol=1e-5, atol=1e-5)


def test_navigation_oracle_is_the_worked_example() -> None:
    env = BatchedNavigation2D(2, horizon=100)
    tasks = [{"goal": np.array([0.25, -0.05])}, {"goal": np.array([-0.5, 0.5])}]
    episodes = rollout(env, tasks, 1, navigation_oracle(env, tasks))
    # Goal (0.25, -0.05): positions (0.1, -0.05), (0.2, -0.05), (0.25, -0.05): distances
    # 0.15, 0.05, 0 (terminated). Goal (-0.5, 0.5): the diagonal, 5 steps at 0.1·√2 each.
    expected = [-0.2, -np.sqrt(2) * (0.4 + 0.3 + 0.2 + 0.1)]
    np.testing.assert_allclose(episodes.episode_returns()[:, 0].numpy(), expected, atol=1e-5)
    assert episodes.masks[:, 0, 0].sum() == 3 and episodes.masks[:, 1, 0].sum() == 5
