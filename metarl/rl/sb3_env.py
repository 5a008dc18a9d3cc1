"""Our batched task simulators as a Stable-Baselines3 ``VecEnv`` (for the paper's baselines).

The pretrained and oracle baselines (Finn et al. 2017, Sec. 5.3) are ordinary RL policies
trained on the whole task distribution. They train with Stable-Baselines3 on the same fast
batched simulator as MAML (:class:`~metarl.envs.BatchedTaskEnv`: one array step for all
environments) rather than on ``N`` wrapped gymnasium environments.

SB3's vectorised environments reset each environment on its own when its episode ends; the
batched simulators support that with ``reset(indices)``. Every reset draws a new task for that
environment from the adapter's own seeded generator, so training sees the task distribution.
With ``task_in_observation`` the task's parameters (goal, target velocity, direction) are
appended to the observation: the oracle's input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from metarl.envs import BatchedTaskEnv

ACTION_BOUND = 1.0
"""Every task environment here takes actions in ``[-1, 1]`` (HalfCheetah and Ant control
ranges; 2D navigation clips to it and scales by 0.1)."""


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
        self.env = env
        self.task_in_observation = task_in_observation
        self._rng = np.random.default_rng(seed)
        env.seed(seed)
        self._tasks = env.sample_tasks(env.num_envs, self._rng)
        self.task_dim = env.task_array(self._tasks[:1]).shape[1]
        obs_dim = env.observation_dim + (self.task_dim if task_in_observation else 0)
        observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = spaces.Box(-ACTION_BOUND, ACTION_BOUND, (env.action_dim,), np.float32)
        self.render_mode = None  # set before SB3's constructor, which warns when it is missing
        super().__init__(env.num_envs, observation_space, action_space)
        self._actions: np.ndarray | None = None

    def _observe(self, observation: np.ndarray) -> np.ndarray:
        if not self.task_in_observation:
            return observation.astype(np.float32)
        task = self.env.task_array(self._tasks).astype(np.float32)
        return np.concatenate([observation, task], axis=1).astype(np.float32)

    def reset(self) -> VecEnvObs:
        self._tasks = self.env.sample_tasks(self.num_envs, self._rng)
        self.env.set_tasks(self._tasks)
        return self._observe(self.env.reset())

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        step = self.env.step(self._actions)
        self._actions = None
        done = step.terminated | step.truncated
        observation = self._observe(step.observation)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(done)
        if finished.size:
            for i in finished:
                infos[i]["terminal_observation"] = observation[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(step.truncated[i] and not step.terminated[i])
            for i, task in zip(finished, self.env.sample_tasks(finished.size, self._rng)):
                self._tasks[i] = task
            self.env.set_tasks(self._tasks)  # the running environments keep their tasks
            observation = self._observe(self.env.reset(finished))
        return observation, step.reward.astype(np.float32), done, infos

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Reseed the task draws and the reset noise (from the next reset on)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.env.seed(seed)
        return [seed] * self.num_envs

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()

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
