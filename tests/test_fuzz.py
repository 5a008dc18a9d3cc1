"""Property-based tests: any config value gives a config or one clear line (exit 2, nothing
written); any task or action gives a finite step or a ValueError, never NaN or a crash."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metarl.cli import main
from metarl.config import ConfigError, from_dict, to_dict
from metarl.experiments import get_experiment, load_config

EXPERIMENTS = ["sinusoid", "omniglot-5w1s", "navigation"]
FIELDS = {
    name: sorted(f.name for f in dataclasses.fields(get_experiment(name).config_cls))
    for name in EXPERIMENTS
}
SLOW_OK = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 10**6), st.floats(-1e6, 1e6), st.text(max_size=3)),
             max_size=4),
)  # fmt: skip


@SLOW_OK
@given(data=st.data())
def test_any_config_value_is_a_config_or_one_clear_line(tmp_path_factory, data):
    experiment = data.draw(st.sampled_from(EXPERIMENTS))
    key = data.draw(st.sampled_from(FIELDS[experiment]))
    value = data.draw(values)
    pair = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...')}"
    try:
        config = load_config(experiment, [pair])
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        out = tmp_path_factory.mktemp("run") / "never"
        with pytest.raises(SystemExit) if key == "" else _nothing():
            assert main(["train", experiment, "--out", str(out), "--no-progress",
                         "--set", pair]) == 2  # fmt: skip
        assert not out.exists()
        return
    assert from_dict(type(config), to_dict(config)) == config  # a valid config round-trips


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


SINGLE = ["Navigation2D", "HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]
_ENVS: dict[str, gym.Env] = {}


def _env(name: str) -> gym.Env:
    if name not in _ENVS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _ENVS[name] = gym.make(f"metarl/{name}-v0").unwrapped
    return _ENVS[name]


task_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    st.text(max_size=3),
    st.none(),
)


@SLOW_OK
@given(name=st.sampled_from(SINGLE), key=st.sampled_from(["goal", "velocity", "direction", "x"]),
       value=task_values)  # fmt: skip
def test_any_task_is_accepted_or_refused_with_a_value_error(name, key, value):
    env = _env(name)
    try:
        env.set_task({key: value})
    except ValueError as e:
        assert str(e)
        return
    obs, _ = env.reset(seed=0)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert np.all(np.isfinite(obs)) and np.isfinite(reward)


@SLOW_OK
@given(name=st.sampled_from(SINGLE), data=st.data())
def test_any_action_gives_a_finite_step_or_a_value_error(name, data):
    env = _env(name)
    env.reset(seed=0, options={"task": env.sample_tasks(1, np.random.default_rng(0))[0]})
    dim = env.action_space.shape[0]
    size = data.draw(st.sampled_from([dim, 1, dim + 1]))
    floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
    action = np.array(data.draw(st.lists(floats, min_size=size, max_size=size)))
    try:
        obs, reward, *_ = env.step(action)
    except ValueError as e:
        assert "action" in str(e)
        return
    assert np.all(np.isfinite(obs)) and np.isfinite(reward)


@SLOW_OK
@given(name=st.sampled_from(["navigation2d", "HalfCheetahVel", "AntGoal"]), data=st.data())
def test_batched_steps_are_finite_or_refused(name, data):
    from metarl.rl.task_envs import make_batched_env

    env = make_batched_env(name, 2, 5)
    env.set_tasks(env.sample_tasks(2, np.random.default_rng(0)))
    env.reset()
    scale = data.draw(st.sampled_from([1.0, 1e3, 1e30]))
    bad = data.draw(st.sampled_from([None, np.nan, np.inf]))
    actions = np.random.default_rng(1).uniform(-scale, scale, size=(2, env.action_dim))
    if bad is not None:
        actions[0, 0] = bad
    try:
        step = env.step(actions)
    except ValueError as e:
        assert (bad is not None and "finite" in str(e)) or "diverged" in str(e), e
        return
    assert np.all(np.isfinite(step.observation)) and np.all(np.isfinite(step.reward))
