"""Task environments (gymnasium API), installed as ``metarl.envs``.

Importing this package (and ``import metarl``) registers the environments with gymnasium, e.g.
``gymnasium.make("metarl/HalfCheetahVel-v0")``, without loading MuJoCo: the classes load on
first use. With gymnasium ≥ 1.0 the idiom ``gymnasium.register_envs(metarl.envs)`` also works
(and keeps linters from calling the import unused).

Every environment takes a task: ``sample_tasks(n, rng)`` draws tasks from its distribution,
``set_task(task)`` pins one, ``reset(options={"task": task})`` sets one for the next episode,
and ``gymnasium.make(id, task=task)`` makes an environment with it.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register

LOCOMOTION = ("HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal")
"""The MuJoCo task families (their classes are ``<name>Env`` in :mod:`metarl.envs.locomotion`)."""
RLLAB_SUFFIX = "RllabDt"
"""``<family>RllabDt`` (e.g. ``AntDirRllabDt``) is the family stepped with the paper's rllab time
step, one physics step per action (``physics="rllab_dt"``; :data:`metarl.envs.locomotion.PHYSICS`).
"""

_EXPORTS = {
    "FAMILIES": "locomotion",
    "SINGLE_ENVS": "locomotion",
    "AntDirEnv": "locomotion",
    "AntGoalEnv": "locomotion",
    "AntVelEnv": "locomotion",
    "HalfCheetahDirEnv": "locomotion",
    "HalfCheetahVelEnv": "locomotion",
    "BatchedLocomotion": "mujoco_batch",
    "BatchedNavigation2D": "navigation",
    "Navigation2DEnv": "navigation",
    "sample_navigation_tasks": "navigation",
    "BatchStep": "task_env",
    "BatchedTaskEnv": "task_env",
    "TaskEnv": "task_env",
}
__all__ = [*_EXPORTS, "LOCOMOTION", "RLLAB_SUFFIX"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The horizon is enforced by the environment itself, hence no `max_episode_steps` (it would
# add a second TimeLimit).
register(id="metarl/Navigation2D-v0", entry_point="metarl.envs.navigation:Navigation2DEnv")
for _name in LOCOMOTION:
    register(id=f"metarl/{_name}-v0", entry_point=f"metarl.envs.locomotion:{_name}Env")
    register(
        id=f"metarl/{_name}{RLLAB_SUFFIX}-v0",
        entry_point=f"metarl.envs.locomotion:{_name}Env",
        kwargs={"physics": "rllab_dt"},
    )
