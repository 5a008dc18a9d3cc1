"""2D navigation: gymnasium compliance, hand-worked dynamics, and batched == single."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metarl.envs import BatchedNavigation2D, Navigation2DEnv


def test_check_env_passes_without_avoidable_warnings() -> None:
    env = gym.make("metarl/Navigation2D-v0").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The task requires an unbounded observation space; that warning is expected.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)


def test_gymnasium_make() -> None:
    env = gym.make("metarl/Navigation2D-v0", task={"goal": [0.2, -0.3]})
    obs, info = env.reset(seed=3)
    np.testing.assert_array_equal(obs, np.zeros(2, dtype=np.float32))
    np.testing.assert_array_equal(info["goal"], [0.2, -0.3])
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.1], rtol=1e-6)
    assert reward == pytest.approx(-np.hypot(0.1, 0.2))
    assert not terminated and not truncated


def test_hand_worked_reward_and_termination() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.05, 0.0])})
    env.reset()
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.0]))
    np.testing.assert_allclose(obs, [0.1, 0.0], atol=1e-7)
    assert reward == pytest.approx(-0.05)  # distance after the move, not before (0.05 either way)
    assert not terminated and not truncated
    obs, reward, terminated, truncated, _ = env.step(np.array([-0.5, 0.0]))
    np.testing.assert_allclose(obs, [0.05, 0.0], atol=1e-7)
    assert reward == pytest.approx(0.0, abs=1e-12)
    assert terminated and not truncated


def test_reward_is_distance_after_the_move() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.3, 0.4])})
    env.reset()
    _, reward, *_ = env.step(np.array([0.0, 0.0]))
    assert reward == pytest.approx(-0.5)  # 3-4-5 triangle from the origin
    _, reward, *_ = env.step(np.array([1.0, 1.0]))
    assert reward == pytest.approx(-np.hypot(0.2, 0.3))


def test_termination_needs_both_coordinates_close() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.1, 0.015])})
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([1.0, 0.0]))
    assert not terminated  # |dy| = 0.015 >= 0.01
    _, _, terminated, _, _ = env.step(np.array([0.0, 0.1]))
    assert terminated  # |dx| = 0, |dy| = 0.005


def test_action_is_clipped() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.4, 0.4])})
    env.reset()
    obs, *_ = env.step(np.array([5.0, -3.0]))
    np.testing.assert_allclose(obs, [0.1, -0.1], atol=1e-7)


def test_truncation_at_horizon() -> None:
    env = Navigation2DEnv(horizon=5, task={"goal": np.array([0.5, 0.5])})
    env.reset()
    flags = [env.step(np.zeros(2))[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]
    env.reset()
    assert not env.step(np.zeros(2))[3]  # reset restarts the step count


def test_default_horizon_is_100() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.5, 0.5])})
    env.reset()
    truncated = [env.step(np.zeros(2))[3] for _ in range(100)]
    assert truncated.index(True) == 99


def test_unset_task_is_sampled_from_np_random_and_pinning_works() -> None:
    env = Navigation2DEnv()
    _, info_a = env.reset(seed=7)
    _, info_b = env.reset(seed=7)
    np.testing.assert_array_equal(info_a["goal"], info_b["goal"])
    assert np.all(np.abs(info_a["goal"]) <= 0.5)
    _, info = env.reset(options={"task": {"goal": np.array([0.1, 0.2])}})
    np.testing.assert_array_equal(info["goal"], [0.1, 0.2])
    _, info = env.reset(seed=123)
    np.testing.assert_array_equal(info["goal"], [0.1, 0.2])  # pinned task survives resets
    task = env.task
    task["goal"][0] = 9.0
    np.testing.assert_array_equal(env.task["goal"], [0.1, 0.2])  # task is a copy


def test_bad_inputs_raise() -> None:
    env = Navigation2DEnv()
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="goal"):
        env.set_task({"goal": np.zeros(3)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError):
        Navigation2DEnv(horizon=0)


def test_task_sampling_range_and_reproducibility() -> None:
    env = Navigation2DEnv()
    tasks = env.sample_tasks(2000, np.random.default_rng(0))
    goals = np.stack([t["goal"] for t in tasks])
    assert goals.shape == (2000, 2)
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    # Uniform on the square: each quadrant holds about a quarter of the goals.
    quadrant_share = np.mean((goals[:, 0] > 0) & (goals[:, 1] > 0))
    assert 0.2 < quadrant_share < 0.3
    again = BatchedNavigation2D(3).sample_tasks(2000, np.random.default_rng(0))
    np.testing.assert_array_equal(goals, np.stack([t["goal"] for t in again]))
    narrow = Navigation2DEnv(low=0.1, high=0.2).sample_tasks(100, np.random.default_rng(1))
    assert all(np.all((0.1 <= t["goal"]) & (t["goal"] <= 0.2)) for t in narrow)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_matches_single_env_step_by_step(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_envs, horizon = 6, 30
    batched = BatchedNavigation2D(num_envs, horizon=horizon)
    tasks = batched.sample_tasks(num_envs, rng)
    # Goals near the origin so that some episodes terminate before the horizon.
    tasks[0] = {"goal": np.array([0.05, 0.0])}
    tasks[1] = {"goal": np.array([0.0, -0.1])}
    batched.set_tasks(tasks)
    singles = [Navigation2DEnv(horizon=horizon, task=task) for task in tasks]

    obs = batched.reset()
    assert obs.shape == (num_envs, 2) and obs.dtype == np.float32
    for env, row in zip(singles, obs, strict=True):
        np.testing.assert_array_equal(env.reset()[0], row)

    # Steer envs 0 and 1 straight to their goals, the others at random (some out of [-1, 1]).
    scripted = {0: [np.array([0.5, 0.0])], 1: [np.array([0.0, -1.0])]}
    done = np.zeros(num_envs, dtype=bool)
    last_obs, last_terminated, last_truncated = obs, done.copy(), done.copy()
    for t in range(horizon + 3):
        actions = rng.uniform(-1.5, 1.5, size=(num_envs, 2))
        for i, plan in scripted.items():
            if t < len(plan):
                actions[i] = plan[t]
        out = batched.step(actions)
        assert out.reward.shape == (num_envs,) and out.reward.dtype == np.float32
        for i, env in enumerate(singles):
            if done[i]:
                # Frozen: same observation, reward 0, sticky flags.
                np.testing.assert_array_equal(out.observation[i], last_obs[i])
                assert out.reward[i] == 0.0
                assert out.terminated[i] == last_terminated[i]
                assert out.truncated[i] == last_truncated[i]
                continue
            obs_i, reward_i, terminated_i, truncated_i, _ = env.step(actions[i])
            np.testing.assert_array_equal(out.observation[i], obs_i)
            assert out.reward[i] == np.float32(reward_i)
            assert out.terminated[i] == terminated_i
            assert out.truncated[i] == truncated_i
        last_obs = out.observation.copy()
        last_terminated, last_truncated = out.terminated.copy(), out.truncated.copy()
        done = out.terminated | out.truncated
    assert out.terminated[0] and out.terminated[1]
    assert done.all()


def test_batched_bad_inputs_raise() -> None:
    batched = BatchedNavigation2D(2)
    with pytest.raises(RuntimeError):
        batched.reset()
    with pytest.raises(ValueError, match="one task per environment"):
        batched.set_tasks([{"goal": np.zeros(2)}])
    batched.set_tasks([{"goal": np.zeros(2)}, {"goal": np.ones(2) * 0.3}])
    batched.reset()
    with pytest.raises(ValueError, match="shape"):
        batched.step(np.zeros((3, 2)))


def test_rgb_array_render_shows_the_goal_the_point_and_its_path():
    import gymnasium as gym

    env = gym.make("metarl/Navigation2D-v0", render_mode="rgb_array", task={"goal": [0.3, -0.2]})
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([1.0, -1.0]))
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    red = (frame[..., 0] > 200) & (frame[..., 1] < 80)
    blue = (frame[..., 2] > 200) & (frame[..., 0] < 80)
    rows, cols = np.nonzero(red)
    # the goal (0.3, −0.2) lies right of and below the centre of the [−0.6, 0.6]² view
    assert cols.mean() > 128 and rows.mean() > 128 and blue.sum() > 20
    env.close()
    # SB3's idiom and gymnasium's video recorder both work with it.
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env("metarl/Navigation2D-v0", n_envs=2, env_kwargs={"render_mode": "rgb_array"})
    vec.reset()
    vec.close()
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make("metarl/Navigation2D-v0", render_mode="rgb_array").unwrapped)
