"""Our batched task simulators as a Stable-Baselines3 ``VecEnv`` (for the paper's baselines).

The pretrained and oracle baselines (Finn et al. 2017, Sec. 5.3) are ordinary RL policies
trained on the whole task distribution. They train with Stable-Baselines3 on the same fast
batched simulator as MAML (:class:`~metarl.envs.BatchedTaskEnv`: one array step for all
environments) rather than on ``N`` wrapped gymnasium environments. The task draws and the
per-environment resets are :class:`~metarl.rl.task_stream.TaskStream`'s, shared with the
gymnasium vector adapter; this module only speaks SB3's dialect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from metarl.envs import BatchedTaskEnv
from metarl.rl.task_stream import ACTION_BOUND, TaskStream

__all__ = ["ACTION_BOUND", "TaskVecEnv"]


class TaskVecEnv(VecEnv):
    """A :class:`~metarl.envs.BatchedTaskEnv` seen through SB3's ``VecEnv`` interface.

    Args:
        env: the batched simulator; ``env.num_envs`` environments.
        seed: seed of the task draws and of the simulator's reset noise.
        task_in_observation: append ``env.task_array(task)`` to every observation.

    Observations are float32 ``(num_envs, obs_dim [+ task_dim])``; a finished environment
    (terminated, or truncated at the horizon) reports ``done`` with its last observation in
    ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``, and starts a new
    episode with a new task in the same call, as SB3 expects.
    """

    def __init__(
        self, env: BatchedTaskEnv, seed: int = 0, task_in_observation: bool = False
    ) -> None:
        self.stream = TaskStream(env, seed, task_in_observation)
        self.env = env
        self.task_in_observation = task_in_observation
        self.task_dim = self.stream.task_dim
        self.render_mode = None  # set before SB3's constructor, which warns when it is missing
        super().__init__(env.num_envs, self.stream.observation_space, self.stream.action_space)
        self._actions: np.ndarray | None = None

    @property
    def _tasks(self) -> list[dict[str, Any]]:
        """The task each environment is running."""
        return self.stream.tasks

    def reset(self) -> VecEnvObs:
        return self.stream.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        step = self.stream.step(self._actions)
        self._actions = None
        done = step.terminated | step.truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = step.final_observation[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(step.truncated[i] and not step.terminated[i])
        return step.observation, step.reward, done, infos

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Reseed the task draws and the reset noise (from the next reset on)."""
        if seed is not None:
            self.stream.seed(seed)
        return [seed] * self.num_envs

    def close(self) -> None:
        self.stream.close()

    # --- the attribute plumbing SB3 asks of every VecEnv (one simulator behind all indices) --
    def _count(self, indices: None | int | Iterable[int]) -> int:
        return len(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: None | int | Iterable[int] = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * self._count(indices)

    def set_attr(
        self, attr_name: str, value: Any, indices: None | int | Iterable[int] = None
    ) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: None | int | Iterable[int] = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(
        self, wrapper_class: type, indices: None | int | Iterable[int] = None
    ) -> list[bool]:
        return [False] * self._count(indices)
