"""An endless stream of tasks over a batched simulator, and gymnasium's vector API on top of it.

Standard RL libraries train one policy on the whole task distribution (the paper's pretrained
and oracle baselines) through a vectorised-environment interface that resets each environment
on its own when its episode ends. :class:`TaskStream` gives our batched simulators
(:class:`~metarl.envs.BatchedTaskEnv`, one array step for all environments) that behaviour,
drawing a new task at every reset; two thin adapters expose it:

* :class:`TaskVectorEnv` — gymnasium's ``VectorEnv`` (autoreset in the same step, the final
  observation in ``infos["final_obs"]``);
* :class:`metarl.rl.sb3_env.TaskVecEnv` — Stable-Baselines3's ``VecEnv``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from metarl.envs import BatchedTaskEnv

ACTION_BOUND = 1.0
"""Every task environment here takes actions in ``[-1, 1]`` (HalfCheetah and Ant control
ranges; 2D navigation clips to it and scales by 0.1)."""


class StreamStep(NamedTuple):
    """One step of all environments (float32 observations; ``num_envs`` rows each)."""

    observation: np.ndarray  # after the automatic resets: the next episode's first observation
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_observation: np.ndarray  # the last observation of the episode, before any reset


class TaskStream:
    """Episodes of freshly drawn tasks on a batched simulator, reset environment by environment.

    Args:
        env: the batched simulator; ``env.num_envs`` environments.
        seed: seed of the task draws and of the simulator's reset noise.
        task_in_observation: append ``env.task_array(task)`` to every observation (the
            oracle's input).
    """

    def __init__(
        self, env: BatchedTaskEnv, seed: int = 0, task_in_observation: bool = False
    ) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.task_in_observation = task_in_observation
        self.seed(seed)
        self.tasks = env.sample_tasks(self.num_envs, self._rng)  # every reset draws anew
        self.task_dim = env.task_array(self.tasks[:1]).shape[1]
        obs_dim = env.observation_dim + (self.task_dim if task_in_observation else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-ACTION_BOUND, ACTION_BOUND, (env.action_dim,), np.float32)

    def seed(self, seed: int) -> None:
        """Reseed the task draws and the reset noise (from the next reset on)."""
        self._rng = np.random.default_rng(seed)
        self.env.seed(seed)

    def observe(self, observation: np.ndarray) -> np.ndarray:
        if not self.task_in_observation:
            return observation.astype(np.float32)
        task = self.env.task_array(self.tasks).astype(np.float32)
        return np.concatenate([observation, task], axis=1).astype(np.float32)

    def reset(self) -> np.ndarray:
        """New tasks and new episodes everywhere; the first observations."""
        self.tasks = self.env.sample_tasks(self.num_envs, self._rng)
        self.env.set_tasks(self.tasks)
        return self.observe(self.env.reset())

    def step(self, actions: np.ndarray) -> StreamStep:
        """Step every environment; the finished ones start a new episode with a new task."""
        step = self.env.step(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1))
        final = self.observe(step.observation)
        observation = final
        finished = np.flatnonzero(step.terminated | step.truncated)
        if finished.size:
            for i, task in zip(finished, self.env.sample_tasks(finished.size, self._rng)):
                self.tasks[i] = task
            self.env.set_tasks(self.tasks)  # the running environments keep their tasks
            observation = self.observe(self.env.reset(finished))
        return StreamStep(
            observation, step.reward.astype(np.float32), step.terminated, step.truncated, final
        )

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


class TaskVectorEnv(gymnasium.vector.VectorEnv):
    """A :class:`TaskStream` through gymnasium's vector API (``autoreset_mode`` SAME_STEP).

    ``reset(seed=...)`` reseeds the task draws; ``step`` returns the next episode's first
    observation for a finished environment, its last one in ``infos["final_obs"]`` (masked by
    ``infos["_final_obs"]``), as gymnasium's ``SyncVectorEnv`` does in that mode.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self, env: BatchedTaskEnv, seed: int = 0, task_in_observation: bool = False
    ) -> None:
        self.stream = TaskStream(env, seed, task_in_observation)
        self.num_envs = env.num_envs
        self.single_observation_space = self.stream.observation_space
        self.single_action_space = self.stream.action_space
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gymnasium.vector.utils.batch_space(
            self.single_action_space, self.num_envs
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)  # seeds ``self.np_random`` as gymnasium's vector envs do
        if seed is not None:
            self.stream.seed(seed)
        return self.stream.reset(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        step = self.stream.step(actions)
        done = step.terminated | step.truncated
        infos: dict[str, Any] = {}
        if done.any():
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = step.final_observation[i]
            final_info = np.array([{} for _ in range(self.num_envs)], dtype=object)
            infos = {"final_obs": final, "_final_obs": done.copy(),
                     "final_info": final_info, "_final_info": done.copy()}  # fmt: skip
        return step.observation, step.reward, step.terminated, step.truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.stream.close()
