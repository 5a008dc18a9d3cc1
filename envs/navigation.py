"""2D point navigation to a goal (Finn, Abbeel & Levine 2017, Sec. 5.3).

A point starts at the origin and moves by ``action_scale * clip(action, -1, 1)`` per step. The
reward is minus the Euclidean distance to the goal *after* the move; the episode terminates when
both coordinates are within 0.01 of the goal and is truncated after ``horizon`` steps (100 in the
paper). A task is a goal ``{"goal": np.array([gx, gy])}`` with ``g ~ U[-0.5, 0.5]^2``.

The pytorch-maml-rl reference uses an action space of ``[-0.1, 0.1]^2`` and clips to it; here
the action space is the normalised ``[-1, 1]^2`` (what gymnasium's checker and a Gaussian policy
expect) and the scale 0.1 is applied inside, which gives the same dynamics.

The single environment and the batched one share :func:`sample_navigation_tasks` and
:func:`_move`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from .task_env import BatchedTaskEnv, BatchStep, TaskEnv, check_actions

GOAL_TOLERANCE = 0.01
"""The episode terminates when ``|x - gx| < GOAL_TOLERANCE`` and ``|y - gy| < GOAL_TOLERANCE``."""


def sample_navigation_tasks(
    n: int, rng: np.random.Generator, low: float = -0.5, high: float = 0.5
) -> list[dict[str, Any]]:
    """Draw ``n`` goals uniformly from the square ``[low, high]^2``.

    Returns:
        ``n`` tasks ``{"goal": (2,) float64 array}``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not low < high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    goals = rng.uniform(low, high, size=(n, 2))
    return [{"goal": goal} for goal in goals]


def _goal_of(task: dict[str, Any]) -> np.ndarray:
    """The goal of a navigation task as a fresh ``(2,)`` float64 array (never aliases ``task``)."""
    if "goal" not in task:
        raise ValueError(f"a navigation task needs a 'goal' entry, got keys {sorted(task)}")
    goal = np.array(task["goal"], dtype=np.float64)
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"task['goal'] must be 2 finite numbers, got {task['goal']!r}")
    return goal


def _move(
    state: np.ndarray, action: np.ndarray, goal: np.ndarray, action_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the point dynamics, for one environment or a batch.

    Args:
        state: ``(..., 2)`` positions.
        action: ``(..., 2)`` raw actions, clipped to ``[-1, 1]`` here.
        goal: ``(..., 2)`` goal positions.
        action_scale: the largest move per coordinate and step.

    Returns:
        ``(new_state (..., 2), reward (...), reached (...) bool)``.
    """
    new_state = state + action_scale * np.clip(action, -1.0, 1.0)
    offset = new_state - goal
    # hypot on the two coordinates (not a norm over an axis) so that one env and a batch of envs
    # run the very same floating-point operations.
    reward = -np.hypot(offset[..., 0], offset[..., 1])
    reached = np.all(np.abs(offset) < GOAL_TOLERANCE, axis=-1)
    return new_state, reward, reached


def _check_dynamics_args(horizon: int, action_scale: float, low: float, high: float) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    if not action_scale > 0:
        raise ValueError(f"action_scale must be positive, got {action_scale}")
    if not low < high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")


class Navigation2DEnv(gym.Env[np.ndarray, np.ndarray], TaskEnv):
    """One point navigating to its goal, with the gymnasium API.

    Without an explicitly set task, every ``reset`` draws a fresh goal from ``np_random`` (a plain
    gym environment over the whole task distribution). ``set_task``, the ``task`` constructor
    argument, or ``reset(options={"task": task})`` pin the goal for all later episodes.

    Observation: the position ``(2,)`` float32. Action: ``(2,)`` in ``[-1, 1]`` (clipped if
    outside). ``truncated`` becomes True at step ``horizon`` whether or not the point also
    reached the goal there (gymnasium's ``TimeLimit`` convention).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    RENDER_SIZE = 256
    """Pixels per side of a rendered frame."""
    VIEW = 0.6
    """The frame shows the square [−VIEW, VIEW]² (goals lie in [−0.5, 0.5]²)."""

    def __init__(
        self,
        horizon: int = 100,
        action_scale: float = 0.1,
        low: float = -0.5,
        high: float = 0.5,
        task: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        """
        Args:
            horizon: steps per episode before truncation (100 in the paper).
            action_scale: the move per unit action (0.1 in the paper).
            low, high: goals are sampled from ``U[low, high]^2``.
            task: optional task to pin from the start.
            render_mode: ``None`` or ``"rgb_array"`` (:meth:`render`: the plane, the goal, the
                point and its path; recordable with gymnasium's ``RecordVideo``).
        """
        super().__init__()
        if render_mode not in (None, "rgb_array"):
            raise ValueError(
                f"Navigation2DEnv renders rgb_array frames; got render_mode={render_mode!r}"
            )
        _check_dynamics_args(horizon, action_scale, low, high)
        self.horizon = horizon
        self.action_scale = action_scale
        self.low = low
        self.high = high
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

        self._pinned_goal: np.ndarray | None = None  # set by set_task; survives resets
        self._goal: np.ndarray | None = None  # the current episode's goal
        self._state: np.ndarray | None = None  # float64 to keep the 0.01 test exact enough
        self._path: list[np.ndarray] = []  # the positions of this episode, for render()
        self._steps = 0
        if task is not None:
            self.set_task(task)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return sample_navigation_tasks(n, rng, self.low, self.high)

    def render(self) -> np.ndarray | None:
        """An ``(H, W, 3)`` uint8 frame: the plane with its axes, the goal (red), the path so far
        (blue) and the point (black). None unless ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        if self._state is None or self._goal is None:
            raise RuntimeError("call reset() before render()")
        size = self.RENDER_SIZE
        frame = np.full((size, size, 3), 255, dtype=np.uint8)

        def pixel(xy: np.ndarray) -> tuple[int, int]:
            col = (xy[0] + self.VIEW) / (2 * self.VIEW) * (size - 1)
            row = (self.VIEW - xy[1]) / (2 * self.VIEW) * (size - 1)
            return int(np.clip(round(row), 0, size - 1)), int(np.clip(round(col), 0, size - 1))

        centre = pixel(np.zeros(2))
        frame[centre[0], :] = frame[:, centre[1]] = (220, 220, 220)  # the axes
        for a, b in zip(self._path[:-1], self._path[1:]):  # the path, as dots along each move
            for t in np.linspace(0.0, 1.0, 8):
                r, c = pixel(a + t * (b - a))
                frame[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = (40, 90, 220)
        r, c = pixel(self._goal)
        frame[max(r - 5, 0) : r + 6, max(c - 5, 0) : c + 6] = (220, 40, 40)
        r, c = pixel(self._state)
        frame[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4] = (0, 0, 0)
        return frame

    def set_task(self, task: dict[str, Any]) -> None:
        goal = _goal_of(task)
        self._pinned_goal = goal
        self._goal = goal.copy()

    @property
    def task(self) -> dict[str, Any]:
        if self._goal is None:
            raise RuntimeError("no task yet: call set_task() or reset() first")
        return {"goal": self._goal.copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Put the point at the origin; ``options={"task": task}`` pins a new task first."""
        super().reset(seed=seed)
        if options is not None and "task" in options:
            self.set_task(options["task"])
        if self._pinned_goal is None:
            self._goal = sample_navigation_tasks(1, self.np_random, self.low, self.high)[0]["goal"]
        else:
            self._goal = self._pinned_goal.copy()
        self._state = np.zeros(2, dtype=np.float64)
        self._path = [self._state.copy()]
        self._steps = 0
        return self._state.astype(np.float32), {"goal": self._goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._goal is None:
            raise RuntimeError("call reset() before step()")
        action = check_actions(action, (2,))
        self._state, reward, reached = _move(self._state, action, self._goal, self.action_scale)
        self._path.append(self._state.copy())
        self._steps += 1
        observation = self._state.astype(np.float32)
        truncated = self._steps >= self.horizon
        return observation, float(reward), bool(reached), truncated, {"goal": self._goal.copy()}


class BatchedNavigation2D(BatchedTaskEnv):
    """``num_envs`` points, each with its own goal, stepped as one array operation.

    Same dynamics, reward and task distribution as :class:`Navigation2DEnv`; finished
    environments are frozen as documented in :class:`BatchedTaskEnv`.
    """

    def __init__(
        self,
        num_envs: int,
        horizon: int = 100,
        action_scale: float = 0.1,
        low: float = -0.5,
        high: float = 0.5,
    ) -> None:
        super().__init__(num_envs, observation_dim=2, action_dim=2, horizon=horizon)
        _check_dynamics_args(horizon, action_scale, low, high)
        self.action_scale = action_scale
        self.low = low
        self.high = high
        self._goals: np.ndarray | None = None  # (N, 2)
        self._state: np.ndarray | None = None  # (N, 2) float64
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return sample_navigation_tasks(n, rng, self.low, self.high)

    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._check_tasks(tasks)
        self._goals = np.stack([_goal_of(task) for task in tasks])

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """The current tasks, one per environment (copies)."""
        if self._goals is None:
            raise RuntimeError("no tasks yet: call set_tasks() first")
        return [{"goal": goal.copy()} for goal in self._goals]

    def task_array(self, tasks: list[dict[str, Any]]) -> np.ndarray:
        return np.stack([_goal_of(task) for task in tasks]) if tasks else np.zeros((0, 2))

    def reset(self, indices: Sequence[int] | None = None) -> np.ndarray:
        if self._goals is None:
            raise RuntimeError("call set_tasks() before reset()")
        index = self._reset_indices(indices)
        if self._state is None:
            self._state = np.zeros((self.num_envs, 2), dtype=np.float64)
        self._state[index] = 0.0
        self._terminated[index] = False
        self._truncated[index] = False
        self._steps[index] = 0
        return self._state.astype(np.float32)

    def step(self, actions: np.ndarray) -> BatchStep:
        if self._state is None or self._goals is None:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        running = ~(self._terminated | self._truncated)
        moved, reward, reached = _move(self._state, actions, self._goals, self.action_scale)
        self._state = np.where(running[:, None], moved, self._state)
        self._steps += running
        self._terminated = self._terminated | (running & reached)
        self._truncated = self._truncated | (running & (self._steps >= self.horizon))
        return BatchStep(
            observation=self._state.astype(np.float32),
            reward=np.where(running, reward, 0.0).astype(np.float32),
            terminated=self._terminated.copy(),
            truncated=self._truncated.copy(),
        )
