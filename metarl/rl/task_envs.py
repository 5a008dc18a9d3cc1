"""Which batched task environment a config's ``env`` names.

The meta-RL code only sees :class:`~metarl.envs.BatchedTaskEnv`; adding a task family means
adding one entry here; :data:`ENVIRONMENTS` (the choices of the config's ``env``) follows.
"""

from __future__ import annotations

from collections.abc import Callable

from metarl.envs import LOCOMOTION, RLLAB_SUFFIX, BatchedTaskEnv


def _navigation(num_envs: int, horizon: int) -> BatchedTaskEnv:
    from metarl.envs import BatchedNavigation2D

    return BatchedNavigation2D(num_envs, horizon=horizon)


def _locomotion(family: str, physics: str = "gymnasium") -> Callable[[int, int], BatchedTaskEnv]:
    def make(num_envs: int, horizon: int) -> BatchedTaskEnv:
        from metarl.envs import BatchedLocomotion  # loads MuJoCo: only when asked for

        return BatchedLocomotion(family, num_envs, horizon=horizon, physics=physics)

    return make


_BATCHED: dict[str, Callable[[int, int], BatchedTaskEnv]] = {
    "navigation2d": _navigation,
    **{family: _locomotion(family) for family in LOCOMOTION},
    # The paper's time stepping: one rllab time step per action (combine with horizon=200).
    **{family + RLLAB_SUFFIX: _locomotion(family, "rllab_dt") for family in LOCOMOTION},
}
ENVIRONMENTS: tuple[str, ...] = tuple(_BATCHED)
"""The environments that come with metarl."""


def register_batched_env(name: str, make: Callable[[int, int], BatchedTaskEnv]) -> None:
    """Make a task environment of your own available as ``env: NAME`` in meta-RL configs.

    Args:
        name: the config value (a new one; the built-in names cannot be replaced).
        make: ``(num_envs, horizon) -> BatchedTaskEnv``, a batched simulator of your tasks
            (:class:`metarl.envs.BatchedTaskEnv`; examples/custom_task_env.py shows one).
    """
    if name in ENVIRONMENTS:
        raise ValueError(f"{name!r} is a built-in environment")
    _BATCHED[name] = make


def environment_names() -> list[str]:
    """Every name ``env`` accepts: the built-in ones and those registered since."""
    return sorted(_BATCHED)


def make_batched_env(name: str, num_envs: int, horizon: int) -> BatchedTaskEnv:
    """``num_envs`` environments of the task family ``name``, stepped as one batch.

    Raises:
        ValueError: an unknown ``name``.
    """
    if name not in _BATCHED:
        raise ValueError(
            f"unknown environment {name!r}; available: {', '.join(environment_names())}"
        )
    return _BATCHED[name](num_envs, horizon)
