"""Task environments (gymnasium API), installed as ``metarl.envs``.

Importing this package registers the environments with gymnasium, e.g.
``gymnasium.make("metarl/Navigation2D-v0")``.
"""

from gymnasium.envs.registration import register

from .locomotion import (
    FAMILIES,
    SINGLE_ENVS,
    AntDirEnv,
    AntGoalEnv,
    AntVelEnv,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
)
from .mujoco_batch import BatchedLocomotion
from .navigation import BatchedNavigation2D, Navigation2DEnv, sample_navigation_tasks
from .task_env import BatchedTaskEnv, BatchStep, TaskEnv

__all__ = [
    "FAMILIES",
    "SINGLE_ENVS",
    "AntDirEnv",
    "AntGoalEnv",
    "AntVelEnv",
    "BatchedLocomotion",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "BatchStep",
    "BatchedNavigation2D",
    "BatchedTaskEnv",
    "Navigation2DEnv",
    "TaskEnv",
    "sample_navigation_tasks",
]

# The horizon is enforced by the environment itself, hence no `max_episode_steps` (it would
# add a second TimeLimit).
register(id="metarl/Navigation2D-v0", entry_point="metarl.envs.navigation:Navigation2DEnv")
for _name in SINGLE_ENVS:
    register(id=f"metarl/{_name}-v0", entry_point=f"metarl.envs.locomotion:{_name}Env")
