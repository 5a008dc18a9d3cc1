"""The task interface shared by every task environment.

Two shapes of environment exist:

- :class:`TaskEnv` — a mixin for a single ``gymnasium.Env`` whose dynamics or reward depend on a
  task (a goal position, a target velocity, ...). The task distribution lives with the
  environment (``sample_tasks``) so that a config only has to name the environment.
- :class:`BatchedTaskEnv` — a vectorised simulator stepping ``N`` environments, each with its
  own task, as one array operation. The meta-RL sampler uses it to step all tasks × all
  episodes of a meta-batch together.

Tasks are plain ``dict[str, Any]`` (e.g. ``{"goal": np.array([gx, gy])}``) so they can be logged,
pickled and compared without knowing the environment.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class TaskEnv(abc.ABC):
    """Mixin for a single environment parameterised by a task.

    Subclasses sample tasks from their own task distribution and switch between them without
    being re-created (re-creating a MuJoCo environment per task would be slow).
    """

    @abc.abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """Draw ``n`` independent tasks from the environment's task distribution.

        Args:
            n: number of tasks, ``n >= 0``.
            rng: the generator to draw from; the environment's own RNG is not touched, so that
                the meta-batch of tasks depends only on the caller's seed.
        """

    @abc.abstractmethod
    def set_task(self, task: dict[str, Any]) -> None:
        """Make ``task`` the environment's task from now on (call it between episodes).

        Raises:
            ValueError: if ``task`` is malformed for this environment.
        """

    @property
    @abc.abstractmethod
    def task(self) -> dict[str, Any]:
        """The current task (a copy: mutating it does not change the environment)."""


class BatchStep(NamedTuple):
    """What :meth:`BatchedTaskEnv.step` returns for ``N`` environments.

    Attributes:
        observation: ``(N, obs_dim)`` float32, the observation after the step.
        reward: ``(N,)`` float32.
        terminated: ``(N,)`` bool, the environment reached a terminal state (now or earlier).
        truncated: ``(N,)`` bool, the episode was cut at the horizon (now or earlier).
    """

    observation: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class BatchedTaskEnv(abc.ABC):
    """``N`` task environments stepped together as one numpy array operation.

    Meta-RL resets all environments together, so the horizon cuts them at the same step; a
    subset can also be reset on its own (``reset(indices)``: what auto-resetting vectorised
    environments such as Stable-Baselines3's need), and every environment counts its own steps.

    Finished environments are frozen: once an environment has terminated or been truncated,
    further steps leave its state unchanged, return its last observation with reward 0, and
    keep reporting the ``terminated``/``truncated`` flags it finished with (the flags are
    sticky). Stepping a finished environment never raises, so the sampler can keep stepping the
    whole batch until every environment is done; it is the sampler's job to mask the steps that
    come after an environment finished (mask at step ``t`` = not done before step ``t``).

    Attributes:
        num_envs: ``N``, the number of environments.
        observation_dim: size of one observation.
        action_dim: size of one action.
        horizon: maximum number of steps of an episode; step ``horizon`` truncates.
    """

    render_mode: str | None = None
    """Batched simulators do not render (the viewer renders recorded states)."""

    noise_rows: tuple[int, int] | None = None
    """``(first, total)``: these environments are rows ``first…`` of a batch of ``total`` split
    over processes; a reset of all of them draws the noise of the whole batch and keeps its own
    rows, so every process starts its episodes exactly as one process would."""

    def __init__(self, num_envs: int, observation_dim: int, action_dim: int, horizon: int) -> None:
        for name, value in (
            ("num_envs", num_envs),
            ("observation_dim", observation_dim),
            ("action_dim", action_dim),
            ("horizon", horizon),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_envs = int(num_envs)
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.horizon = int(horizon)

    @abc.abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """Draw ``n`` tasks from the same distribution as the matching single environment."""

    def seed(self, seed: int | list[int]) -> None:  # noqa: B027 - optional hook
        """Reseed the randomness of :meth:`reset` (e.g. initial-state noise).

        Deterministic environments (2D navigation starts at the origin) ignore it.
        """

    @abc.abstractmethod
    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Give environment ``i`` the task ``tasks[i]``; takes effect at the next reset.

        Raises:
            ValueError: if ``len(tasks) != num_envs`` or a task is malformed.
        """

    @abc.abstractmethod
    def reset(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Start a new episode in every environment, or only in those of ``indices``.

        Returns:
            observations ``(N, obs_dim)`` float32 of all environments (the others unchanged).

        Raises:
            RuntimeError: if no tasks were set.
        """

    @abc.abstractmethod
    def task_array(self, tasks: list[dict[str, Any]]) -> np.ndarray:
        """The tasks' parameters as a float array ``(len(tasks), task_dim)`` (goal, velocity,
        direction): what a task-conditioned policy (the oracle) sees."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> BatchStep:
        """Advance every still-running environment by one step.

        Args:
            actions: ``(N, action_dim)``; rows of finished environments are ignored.
        """

    def _check_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Raise ValueError unless there is exactly one task per environment."""
        if len(tasks) != self.num_envs:
            raise ValueError(
                f"tasks must hold one task per environment: expected {self.num_envs}, "
                f"got {len(tasks)}"
            )

    def _reset_indices(self, indices: Sequence[int] | None) -> np.ndarray:
        """``indices`` (default: all) as a sorted, checked integer array."""
        if indices is None:
            return np.arange(self.num_envs)
        index = np.unique(np.asarray(indices, dtype=np.int64))
        if index.size and (index[0] < 0 or index[-1] >= self.num_envs):
            raise ValueError(f"reset indices must lie in [0, {self.num_envs}), got {list(indices)}")
        return index

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Return ``actions`` as a float64 ``(N, action_dim)`` array (see :func:`check_actions`)."""
        return check_actions(actions, (self.num_envs, self.action_dim))


MAX_ACTION = 1e6
"""Actions are meant for [-1, 1]; beyond this magnitude the control cost overflows float32."""


class DivergedActions(ValueError, FloatingPointError):
    """Actions of a policy that diverged: bad input to the environment (a ValueError, as
    gymnasium expects) and a numerical failure of training (one line from ``metarl``)."""


def check_actions(actions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``actions`` as a float64 array of ``shape``.

    Raises:
        ValueError: a wrong shape, a non-finite entry (a NaN action would silently turn the
            whole episode into NaN rewards), or a magnitude above :data:`MAX_ACTION` (a policy
            that diverged: the control cost would overflow).
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape != shape:
        raise ValueError(f"actions must have shape {shape}, got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions must be finite")
    if np.any(np.abs(actions) > MAX_ACTION):
        raise DivergedActions(f"actions beyond ±{MAX_ACTION:g}: the policy diverged")
    return actions
