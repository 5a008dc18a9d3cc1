"""MuJoCo task environments against gymnasium's own environments, and the batched simulator
against the single environments, step by step."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metarl.envs as E

FAMILY_NAMES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_registered_and_passes_check_env(name):
    env = gym.make(f"metarl/{name}-v0")
    with warnings.catch_warnings():
        # check_env only warns about, e.g., observations outside the observation space
        warnings.simplefilter("error")
        # gymnasium's robots have unbounded observation spaces; that warning is expected.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


RLLAB_CASES = [("AntDir", "rllab_dt"), ("HalfCheetahVel", "rllab_dt")]


@pytest.mark.parametrize("name, physics", [(n, "gymnasium") for n in FAMILY_NAMES] + RLLAB_CASES)
def test_batched_equals_single_env_step_by_step(name, physics):
    n, horizon = 3, 25
    batch = E.BatchedLocomotion(name, n, horizon=horizon, threads=2, physics=physics)
    rng = np.random.default_rng(1)
    tasks = batch.sample_tasks(n, rng)
    batch.set_tasks(tasks)
    obs_b = batch.reset(seeds=[5, 6, 7])
    env_id = f"metarl/{name}{E.RLLAB_SUFFIX if physics == 'rllab_dt' else ''}-v0"
    singles = [gym.make(env_id, horizon=horizon).unwrapped for _ in range(n)]
    obs_s = [e.reset(seed=5 + i, options={"task": tasks[i]})[0] for i, e in enumerate(singles)]
    np.testing.assert_allclose(obs_b, np.array(obs_s), atol=1e-6)
    done = [False] * n
    for _ in range(horizon):
        actions = 0.5 * rng.standard_normal((n, batch.action_dim))
        step = batch.step(actions)
        for i, env in enumerate(singles):
            if done[i]:
                assert step.reward[i] == 0.0  # frozen after it finished
                continue
            obs, reward, terminated, truncated, _ = env.step(actions[i])
            np.testing.assert_allclose(step.observation[i], obs, atol=1e-4)
            assert step.reward[i] == pytest.approx(reward, abs=1e-4)
            assert (step.terminated[i], step.truncated[i]) == (terminated, truncated)
            done[i] = terminated or truncated
    assert all(done)
    batch.close()


def _gym_reference(robot: str, seed: int, actions: np.ndarray):
    """gymnasium's own HalfCheetah-v5 / Ant-v5: its velocity, costs and health per step."""
    env = gym.make("HalfCheetah-v5" if robot == "half_cheetah" else "Ant-v5").unwrapped
    env.reset(seed=seed)
    for a in actions:
        _, _, terminated, _, info = env.step(a)
        yield info, terminated


# The constants are the MAML code's (cbfinn/maml_rl's rllab envs, as tristandeleu/pytorch-maml-rl
# ports them in maml_rl/envs/mujoco/{half_cheetah,ant}.py): control cost 0.5·1e-1‖a‖² for
# HalfCheetah and 0.5·1e-2‖a‖² for Ant, survive reward 0.05, AntVel's +1.0 on −|v − v*|, AntPos's
# +4.0 on −‖xy − g‖₁; contact cost 0.5·1e-3 Σ clip(cfrc_ext)², which is gymnasium's own
# reward_contact here. Written out here, not imported, so a wrong constant in envs/ fails.
@pytest.mark.parametrize(
    "name, expected",
    [
        ("HalfCheetahVel", lambda info, a, task: -abs(info["x_velocity"] - task["velocity"])
         - 0.05 * np.sum(a**2)),
        ("HalfCheetahDir", lambda info, a, task: task["direction"] * info["x_velocity"]
         - 0.05 * np.sum(a**2)),
        ("AntVel", lambda info, a, task: -abs(info["x_velocity"] - task["velocity"]) + 1.0
         - 0.005 * np.sum(a**2) + info["reward_contact"] + 0.05),
        ("AntDir", lambda info, a, task: task["direction"] * info["x_velocity"]
         - 0.005 * np.sum(a**2) + info["reward_contact"] + 0.05),
        ("AntGoal", lambda info, a, task: -np.abs(np.array([info["x_position"], info["y_position"]])
         - task["goal"]).sum() + 4.0 - 0.005 * np.sum(a**2) + info["reward_contact"] + 0.05),
    ],
)  # fmt: skip
def test_rewards_match_formulas_on_gymnasium_quantities(name, expected):
    """The task reward, recomputed from gymnasium's own env's velocity and contact cost."""
    env = gym.make(f"metarl/{name}-v0").unwrapped
    task = env.sample_tasks(1, np.random.default_rng(3))[0]
    env.reset(seed=11, options={"task": task})
    rng = np.random.default_rng(4)
    actions = 0.3 * rng.standard_normal((15, env.action_space.shape[0]))
    robot = E.FAMILIES[name].robot
    for a, (info, gym_terminated) in zip(actions, _gym_reference(robot, 11, actions)):
        _, reward, terminated, _, _ = env.step(a)
        if robot == "ant":  # the two simulations are in step: gymnasium's qpos is ours
            assert (info["x_position"], info["y_position"]) == tuple(env.data.qpos[:2])
        assert reward == pytest.approx(expected(info, a, task), abs=1e-6)
        assert terminated == gym_terminated
        if terminated:
            break


@pytest.mark.parametrize(
    "robot, gym_id, family",
    [("ant", "Ant-v5", "AntDir"), ("half_cheetah", "HalfCheetah-v5", "HalfCheetahDir")],
)
def test_rllab_dt_is_gymnasiums_robot_at_rllabs_time_step(tmp_path, robot, gym_id, family):
    """``<family>RllabDt`` moves exactly as gymnasium's own robot loaded from its XML with
    rllab's time step (Ant 0.02 s; HalfCheetah's is gymnasium's 0.01 s already) and stepped once
    per action; it pickles with its physics, and refuses a frame skip."""
    import gymnasium.envs.mujoco as gym_mujoco

    from metarl.envs.locomotion import RLLAB_TIMESTEP

    xml = (Path(gym_mujoco.__file__).parent / "assets" / f"{robot}.xml").read_text()
    assert 'timestep="0.01"' in xml
    path = tmp_path / f"{robot}.xml"
    path.write_text(xml.replace('timestep="0.01"', f'timestep="{RLLAB_TIMESTEP[robot]}"'))
    theirs = gym.make(gym_id, xml_file=str(path), frame_skip=1).unwrapped
    ours = gym.make(f"metarl/{family}{E.RLLAB_SUFFIX}-v0", task={"direction": 1.0}).unwrapped
    default = gym.make(f"metarl/{family}-v0").unwrapped
    assert ours.dt == RLLAB_TIMESTEP[robot] != default.dt == 0.05
    assert ours.observation_space.shape == default.observation_space.shape
    obs_theirs, _ = theirs.reset(seed=2)
    obs_ours, _ = ours.reset(seed=2)
    np.testing.assert_array_equal(obs_ours, obs_theirs)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.uniform(-1, 1, ours.action_space.shape)
        obs_theirs, _, term_theirs, _, info = theirs.step(a)
        obs_ours, reward, term_ours, _, _ = ours.step(a)
        np.testing.assert_allclose(obs_ours, obs_theirs, atol=1e-12)
        assert term_ours == term_theirs
        cost = 0.05 if robot == "half_cheetah" else 0.005
        extra = 0.0 if robot == "half_cheetah" else info["reward_contact"] + 0.05
        assert reward == pytest.approx(info["x_velocity"] - cost * np.sum(a**2) + extra, abs=1e-9)
        if term_ours:
            break
    copy = pickle.loads(pickle.dumps(ours))
    assert (copy.physics, copy.dt, copy.horizon, copy.task) == ("rllab_dt", ours.dt, 100, ours.task)
    with pytest.raises(ValueError, match="physics must be one of gymnasium, rllab_dt"):
        E.BatchedLocomotion(family, 1, physics="mujoco")
    with pytest.raises(ValueError, match="steps once per action; drop frame_skip"):
        gym.make(f"metarl/{family}{E.RLLAB_SUFFIX}-v0", frame_skip=5)


def test_ant_contact_forces_are_real():
    """cfrc_ext is only filled by mj_rnePostConstraint: standing on the floor gives non-zero
    contact forces in the observation (a known trap that zeroed them for years)."""
    batch = E.BatchedLocomotion("AntVel", 2, threads=1)
    batch.set_tasks(batch.sample_tasks(2, np.random.default_rng(0)))
    batch.reset(seeds=[0, 1])
    for _ in range(10):
        step = batch.step(np.zeros((2, batch.action_dim)))
    contact_part = step.observation[:, 27:]
    assert contact_part.shape == (2, 78)
    assert (np.abs(contact_part).sum(axis=1) > 0.1).all()
    single = gym.make("metarl/AntVel-v0").unwrapped
    single.reset(seed=0, options={"task": {"velocity": 1.0}})
    for _ in range(10):
        obs, *_ = single.step(np.zeros(8))
    assert np.abs(obs[27:]).sum() > 0.1


def test_thread_count_does_not_change_results():
    results = []
    for threads in (1, 2):
        batch = E.BatchedLocomotion("HalfCheetahVel", 5, horizon=10, threads=threads)
        batch.set_tasks(batch.sample_tasks(5, np.random.default_rng(0)))
        batch.reset(seeds=list(range(5)))
        rng = np.random.default_rng(9)
        results.append([batch.step(rng.standard_normal((5, 6))).observation for _ in range(10)])
        batch.close()
    np.testing.assert_array_equal(np.array(results[0]), np.array(results[1]))


def test_task_distributions_and_errors():
    rng = np.random.default_rng(0)
    vel = E.FAMILIES["HalfCheetahVel"].sample_tasks(500, rng)
    assert all(0.0 <= t["velocity"] <= 2.0 for t in vel)
    ant_vel = E.FAMILIES["AntVel"].sample_tasks(500, rng)
    assert max(t["velocity"] for t in ant_vel) > 2.5
    dirs = {t["direction"] for t in E.FAMILIES["AntDir"].sample_tasks(100, rng)}
    assert dirs == {-1.0, 1.0}
    goals = np.array([t["goal"] for t in E.FAMILIES["AntGoal"].sample_tasks(500, rng)])
    assert goals.min() >= -3.0 and goals.max() <= 3.0 and goals.shape == (500, 2)
    with pytest.raises(ValueError, match="unknown locomotion family"):
        E.BatchedLocomotion("HalfCheetahJump", 2)
    batch = E.BatchedLocomotion("HalfCheetahVel", 2, threads=1)
    with pytest.raises(RuntimeError, match="set_tasks"):
        batch.reset()
    with pytest.raises(ValueError, match="'velocity'"):
        batch.set_tasks([{"goal": 1.0}, {"goal": 2.0}])
    with pytest.raises(ValueError, match="one task per environment"):
        batch.set_tasks([{"velocity": 1.0}])


def test_import_metarl_registers_every_environment_without_loading_mujoco():
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, metarl\n"
        "assert 'mujoco' not in sys.modules, 'registration loaded MuJoCo'\n"
        "ids = [s for s in gym.registry if s.startswith('metarl/')]\n"
        "env = gym.make('metarl/HalfCheetahVel-v0', task={'velocity': 1.0})\n"
        "print(len(ids), env.unwrapped.task)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "11" and "velocity" in out.stdout
    assert "settotalmass" not in out.stderr  # MuJoCo's deprecation warning is gone too
    assert set(E.LOCOMOTION) == set(E.FAMILIES) == set(E.SINGLE_ENVS)


def test_ant_goal_observes_the_torso_position_and_the_others_do_not():
    """AntGoal's way to its goal depends on where the robot is, so its observation starts with
    the torso's x, y (gymnasium's Ant leaves them out); single and batched agree."""
    goal = {"goal": np.array([2.0, -1.0])}
    single = gym.make("metarl/AntGoal-v0").unwrapped
    obs, _ = single.reset(seed=3, options={"task": goal})
    for _ in range(5):
        obs, *_ = single.step(np.full(8, 0.5))
    np.testing.assert_allclose(obs[:2], single.data.qpos[:2])
    assert obs.shape == (2 + 13 + 14 + 13 * 6,) == single.observation_space.shape
    batch = E.BatchedLocomotion("AntGoal", 1, threads=1)
    assert batch.observation_dim == obs.shape[0]
    for name in ("AntVel", "AntDir"):
        env = gym.make(f"metarl/{name}-v0").unwrapped
        obs, _ = env.reset(seed=3)
        assert obs.shape == (13 + 14 + 13 * 6,)
        np.testing.assert_allclose(obs[0], env.data.qpos[2])  # starts with the torso's height
        assert E.BatchedLocomotion(name, 1, threads=1).observation_dim == obs.shape[0]
