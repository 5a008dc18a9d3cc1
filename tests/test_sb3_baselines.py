"""The SB3 adapter of the batched simulators and the pretrained/oracle baselines.

Checked against independent references: partial resets against gymnasium's own reset,
auto-reset against SB3's VecEnv contract, the converted policy against SB3's own distribution.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

import metarl.envs as E
from metarl.cli import main
from metarl.experiments import load_config
from metarl.reports import read_report
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.sb3_baselines import (
    MATCHED_KEYS,
    OBS_CLIP,
    baseline_command,
    load_baseline,
    oracle_actions,
    sb3_to_policy,
)
from metarl.rl.sb3_env import TaskVecEnv
from metarl.rl.task_envs import make_batched_env
from metarl.rl.task_stream import TaskVectorEnv


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_partial_reset_matches_gymnasium_and_leaves_the_others_running():
    n, horizon = 3, 8
    batch = E.BatchedLocomotion("HalfCheetahVel", n, horizon=horizon, threads=2)
    twin = E.BatchedLocomotion("HalfCheetahVel", n, horizon=horizon, threads=1)
    tasks = batch.sample_tasks(n, np.random.default_rng(0))
    for env in (batch, twin):
        env.set_tasks(tasks)
        env.reset(seeds=[1, 2, 3])
    rng = np.random.default_rng(4)
    for _ in range(3):
        actions = rng.uniform(-1, 1, (n, batch.action_dim))
        batch.step(actions)
        twin.step(actions)
    obs = batch.reset(indices=[1], seeds=[9])
    single = gym.make("metarl/HalfCheetahVel-v0", horizon=horizon).unwrapped
    reference, _ = single.reset(seed=9, options={"task": tasks[1]})
    np.testing.assert_allclose(obs[1], reference, atol=1e-6)
    for _ in range(horizon - 3):  # the others finish at their own horizon, env 1 does not
        actions = rng.uniform(-1, 1, (n, batch.action_dim))
        step, twin_step = batch.step(actions), twin.step(actions)
        ref_obs, ref_reward, *_ = single.step(actions[1])
        np.testing.assert_allclose(step.observation[[0, 2]], twin_step.observation[[0, 2]])
        np.testing.assert_allclose(step.observation[1], ref_obs, atol=1e-4)
        assert step.reward[1] == pytest.approx(ref_reward, abs=1e-4)
    assert step.truncated.tolist() == [True, False, True]
    for _ in range(3):
        step = batch.step(np.zeros((n, batch.action_dim)))
    assert step.truncated.tolist() == [True, True, True]
    batch.close()
    twin.close()


def test_navigation_partial_reset_and_own_step_counts():
    env = E.BatchedNavigation2D(3, horizon=4)
    env.set_tasks([{"goal": np.array([0.4, 0.4])}] * 3)
    env.reset()
    env.step(np.ones((3, 2)))
    obs = env.reset(indices=[2])
    np.testing.assert_allclose(obs[:, 0], [0.1, 0.1, 0.0])
    for _ in range(3):
        step = env.step(np.ones((3, 2)))
    assert step.truncated.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="reset indices"):
        env.reset(indices=[3])


def test_vec_env_auto_resets_with_new_tasks_and_terminal_observations():
    batched = E.BatchedNavigation2D(4, horizon=3)
    vec = TaskVecEnv(batched, seed=0, task_in_observation=True)
    obs = vec.reset()
    assert obs.shape == (4, 4) and obs.dtype == np.float32
    goals = obs[:, 2:].copy()
    np.testing.assert_allclose(goals, batched.task_array(batched.tasks), atol=1e-7)
    for _ in range(3):
        vec.step_async(np.ones((4, 2)))
        obs, rewards, dones, infos = vec.step_wait()
        assert rewards.shape == (4,)
    assert dones.all()  # the horizon (no goal of seed 0 lies on the diagonal path)
    for info in infos:
        np.testing.assert_allclose(info["terminal_observation"][:2], [0.3, 0.3], atol=1e-6)
        assert info["TimeLimit.truncated"]
    np.testing.assert_allclose(obs[:, :2], 0.0)  # new episodes start at the origin ...
    assert not np.allclose(obs[:, 2:], goals)  # ... with new tasks
    np.testing.assert_allclose(obs[:, 2:], batched.task_array(batched.tasks), atol=1e-7)


def test_gymnasium_vector_env_matches_the_sb3_adapter_step_by_step():
    """The same stream through gymnasium's vector API: same observations, rewards and final
    observations as the SB3 adapter, with gymnasium's same-step autoreset conventions."""
    make = lambda: E.BatchedLocomotion("HalfCheetahVel", 3, horizon=4)  # noqa: E731
    gym_vec = TaskVectorEnv(make(), seed=5, task_in_observation=True)
    sb3_vec = TaskVecEnv(make(), seed=5, task_in_observation=True)
    assert gym_vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert gym_vec.observation_space.shape == (3, 18) and gym_vec.action_space.shape == (3, 6)
    obs, info = gym_vec.reset(seed=5)
    sb3_vec.seed(5)
    np.testing.assert_array_equal(obs, sb3_vec.reset())
    actions = np.random.default_rng(0).uniform(-1, 1, (9, 3, 6))
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = gym_vec.step(action)
        sb3_vec.step_async(action)
        sb3_obs, sb3_reward, sb3_done, sb3_infos = sb3_vec.step_wait()
        np.testing.assert_array_equal(obs, sb3_obs)
        np.testing.assert_array_equal(reward, sb3_reward)
        np.testing.assert_array_equal(terminated | truncated, sb3_done)
        assert truncated.all() == ((t + 1) % 4 == 0)  # the horizon, in every environment
        if truncated.any():
            assert info["_final_obs"].all()
            for i in range(3):
                np.testing.assert_array_equal(
                    info["final_obs"][i], sb3_infos[i]["terminal_observation"]
                )
        else:
            assert "final_obs" not in info


def _ppo(vec, steps=200):
    env = VecNormalize(VecMonitor(vec), clip_obs=OBS_CLIP)
    model = PPO(
        "MlpPolicy", env, n_steps=50, batch_size=50, n_epochs=2, seed=0, device="cpu",
        policy_kwargs={"net_arch": {"pi": [16, 16], "vf": [16, 16]},
                       "activation_fn": torch.nn.ReLU},
    )  # fmt: skip
    model.learn(steps)
    return model, env


def test_converted_policy_equals_sb3_distribution():
    config = load_config("halfcheetah-dir", ["hidden_sizes=[16,16]"])
    vec = TaskVecEnv(make_batched_env(config.env, 4, 20), seed=1, task_in_observation=True)
    model, env = _ppo(vec)
    assert env.obs_rms.count > 1  # the normalisation is not the identity any more
    policy = sb3_to_policy(model, env, config)
    raw = env.get_original_obs()
    obs, _ = model.policy.obs_to_tensor(env.normalize_obs(raw))
    reference = model.policy.get_distribution(obs).distribution
    mean, log_std = policy(torch.as_tensor(raw, dtype=torch.float32))
    torch.testing.assert_close(mean, reference.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_std.exp(), reference.stddev, atol=1e-6, rtol=1e-6)


def test_oracle_acts_with_its_mean_or_samples_its_gaussian_within_the_bounds():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim=3 + 1, action_dim=2, hidden_sizes=(8,), init_std=0.8)
    with torch.no_grad():
        policy.mean[-1].bias.fill_(0.9)  # near the bound, so that clipping acts on samples
    task = np.array([[-1.0], [1.0]])
    obs = torch.randn(2, 5, 3)  # (n_tasks, E, obs_dim)
    features = torch.as_tensor(task, dtype=torch.float32)[:, None].expand(2, 5, 1)
    inputs = torch.cat([obs, features], dim=-1)
    with torch.no_grad():
        mean, log_std = policy(inputs)
    torch.testing.assert_close(oracle_actions(policy, task)(obs), mean.clamp(-1, 1))
    sampled = oracle_actions(policy, task, torch.Generator().manual_seed(3))(obs)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sampled, (mean + log_std.exp() * noise).clamp(-1, 1))
    assert sampled.abs().max() == 1.0 and not torch.equal(sampled, mean.clamp(-1, 1))


def test_baseline_cli_stores_baselines_that_evaluate_picks_up(tmp_path):
    small = [
        "horizon=10", "hidden_sizes=[16,16]", "meta_batch_size=2", "episodes_per_task=2",
        "eval_tasks=3", "eval_episodes_per_task=2", "eval_steps=1", "tensorboard=false",
    ]  # fmt: skip
    baselines = tmp_path / "baselines"
    for kind in ("pretrained", "oracle"):
        code = main(
            ["baseline", kind, "navigation", "--timesteps", "400", "--out", str(baselines),
             "--no-progress", "--set", *small]
        )  # fmt: skip
        assert code == 0 and (baselines / f"{kind}.pt").exists()
    config = load_config("navigation", small)
    oracle = load_baseline(baselines / "oracle.pt", config)
    assert oracle is not None and oracle.policy.obs_dim == 4  # position ++ goal
    # The oracle is only the gap's upper end: a run of another network (100-100 tanh) is scored
    # against the same controller. A pretrained baseline is adapted, so it needs the run's network.
    other = load_config("navigation", ["horizon=10", "activation=tanh"])
    assert load_baseline(baselines / "pretrained.pt", other) is None
    foreign = load_baseline(baselines / "oracle.pt", other)
    assert foreign is not None
    assert any(isinstance(m, torch.nn.ReLU) for m in foreign.policy.mean)
    assert [m.out_features for m in foreign.policy.mean if isinstance(m, torch.nn.Linear)] == [
        16, 16, 2,
    ]  # fmt: skip
    obs = torch.randn(5, 4)
    torch.testing.assert_close(foreign.policy(obs)[0], oracle.policy(obs)[0], rtol=0, atol=0)
    run = tmp_path / "run"
    assert main(["train", "navigation", "--out", str(run), "--no-progress",
                 "--set", *small, "iterations=1", f"baselines_dir={baselines}"]) == 0  # fmt: skip
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    report = read_report(run)
    assert {c.label: c.method for c in report.curves} == {
        "MAML": "meta_learned",
        "random init": "random_init",
        "pretrained": "pretrained",
        "oracle (PPO)": "oracle_ppo",
        "oracle (PPO, mean action)": "oracle_ppo_mean_action",
        "oracle": "oracle_analytic",
    }
    assert len(report.curve("pretrained").mean) == 2  # adapted: 0 and 1 step
    sampled, mean_action = (report.curve(m).mean for m in ("oracle_ppo", "oracle_ppo_mean_action"))
    assert sampled != mean_action  # two different controllers
    assert report.gap_oracle == "oracle_ppo"  # the sampled PPO oracle is the yardstick
    assert report.missing == []
    assert report.baselines["oracle"]["timesteps"] >= 400
    assert all(np.isfinite(v) for c in report.curves for v in c.mean)


def test_baseline_cli_rejects_bad_input(capsys):
    assert main(["baseline", "oracle", "sinusoid"]) == 2
    assert "meta-RL baselines" in capsys.readouterr().err
    assert main(["baseline", "oracle", "navigation", "--timesteps", "0"]) == 2
    assert "timesteps" in capsys.readouterr().err


def test_baselines_are_also_sb3_models_and_an_interrupted_one_continues(
    tmp_path, monkeypatch, capsys
):
    """`PPO.load` opens the stored .zip (training can go on there); metarl reads only its
    tensor file. An interruption keeps a partial model that the same command continues."""
    from stable_baselines3 import PPO

    from metarl.rl import sb3_baselines

    config = load_config("navigation", ["hidden_sizes=[8,8]", "horizon=20"])
    learn = PPO.learn
    calls = []

    def interrupted_learn(self, total_timesteps, **kwargs):
        calls.append(total_timesteps)
        if len(calls) == 1:  # the first run stops part-way, as after Ctrl-C
            learn(self, 2000, **kwargs)
            raise KeyboardInterrupt
        return learn(self, total_timesteps, **kwargs)

    monkeypatch.setattr(PPO, "learn", interrupted_learn)
    with pytest.raises(KeyboardInterrupt):
        sb3_baselines.train_baseline(config, "oracle", tmp_path, timesteps=6000, progress=False)
    assert (tmp_path / "oracle.partial.pt").is_file() and not (tmp_path / "oracle.pt").exists()
    path = sb3_baselines.train_baseline(config, "oracle", tmp_path, timesteps=6000,
                                        progress=False)  # fmt: skip
    assert "continuing the oracle baseline from" in capsys.readouterr().out
    stored = load_baseline(path, config)
    resumed = stored.info["resumed_from"]
    assert resumed >= 2000 and calls == [6000, 6000 - resumed]  # only the rest is learnt
    assert stored.info["timesteps"] >= 6000
    assert not (tmp_path / "oracle.partial.pt").exists()
    sb3 = PPO.load(tmp_path / "oracle.zip", device="cpu")
    assert sb3.num_timesteps == stored.info["timesteps"]
    assert list((tmp_path / "oracle-tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "overrides",
    [[], ["env=AntDirRllabDt", "horizon=200", "max_kl=0.02"],
     ["hidden_sizes=[64, 64]", "activation=tanh"]],
)  # fmt: skip
def test_the_missing_baseline_hint_trains_one_that_fits(tmp_path, overrides):
    """The command evaluate suggests, read back as `metarl baseline` reads it, has every key a
    stored baseline must share with the run."""
    config = load_config("ant-dir", overrides)
    command = baseline_command(config, "oracle", tmp_path / "b")
    assert command.startswith("metarl baseline oracle ant-dir --set ")
    assert command.endswith(f" --out {tmp_path / 'b'}")
    sets = command.split(" --set ")[1].split(" --out ")[0].split()
    rebuilt = load_config("ant-dir", sets)
    assert all(getattr(rebuilt, k) == getattr(config, k) for k in MATCHED_KEYS)


def test_the_missing_baseline_hint_for_your_own_environment_asks_for_its_code(
    tmp_path, monkeypatch
):
    from metarl.rl import task_envs

    monkeypatch.setattr(task_envs, "_BATCHED", dict(task_envs._BATCHED))
    task_envs.register_batched_env("my-nav", task_envs._BATCHED["navigation2d"])
    from metarl.config import describe

    shown = {row.name: row.allowed for row in describe(load_config("navigation"))}
    assert "| my-nav |" in f"| {shown['env']} |"  # `metarl list navigation` names it
    command = baseline_command(load_config("navigation", ["env=my-nav"]), "pretrained", tmp_path)
    assert command.startswith("metarl --import MODULE_OR_FILE baseline pretrained navigation ")
