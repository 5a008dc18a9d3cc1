"""MuJoCo locomotion task families (Finn et al. 2017, Sec. 5.3; the PyTorch reference's rewards).

Robots are gymnasium's v5 HalfCheetah and Ant (their models, reset noise, observations and
``dt = 0.05`` = timestep 0.01 x frame skip 5; ``physics="rllab_dt"`` steps them with the
paper's rllab time step instead, see :data:`PHYSICS`); only the reward and the task change:

================  =====================  ==================================================
family            task                   reward per step
================  =====================  ==================================================
HalfCheetahVel    v* ~ U[0, 2]           −|v − v*| − 0.05‖a‖²
HalfCheetahDir    d ∈ {−1, +1}, p = ½    d·v − 0.05‖a‖²
AntVel            v* ~ U[0, 3]           −|v − v*| + 1 − 0.005‖a‖² − contact + 0.05
AntDir            d ∈ {−1, +1}, p = ½    d·v − 0.005‖a‖² − contact + 0.05
AntGoal           g ~ U[−3, 3]²          −‖xy − g‖₁ + 4 − 0.005‖a‖² − contact + 0.05
================  =====================  ==================================================

``v`` is the forward velocity as gymnasium defines it: the finite difference of the x position
over one environment step, ``(x_after − x_before) / dt`` (HalfCheetah: the root joint's x;
Ant: the torso body's x). The original MAML code used the centre of mass' velocity; the
difference is small but returns are not on the same scale as the paper's anyway (rllab models,
horizon 200, one physics step per action: dt 0.01 for HalfCheetah, 0.02 for Ant; see the
README). ``contact = 0.0005 Σ clip(cfrc_ext, −1, 1)²``;
``xy`` is the torso's position after the step, read from the free joint (``qpos[:2]``; the
body's ``xpos`` lags one physics sub-step behind after ``mj_step``). Ant terminates when
unhealthy (non-finite state or torso height outside [0.2, 1.0]), exactly as gymnasium's Ant.
Observations are gymnasium's, except that AntGoal's also start with the torso's ``x, y`` (as the
paper's and the PyTorch reference's Ant observations do): without them a policy cannot tell
where it is on the way to its goal.

Every reward term is a vectorised function of arrays with a leading environment dimension,
shared by the single gymnasium environments here and by the batched simulator
(:mod:`metarl.envs.mujoco_batch`), so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import mujoco
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.utils import EzPickle
except ImportError:
    from metarl.runtime import missing_extra

    raise missing_extra("MuJoCo", "rl", "the HalfCheetah and Ant tasks") from None

from .mujoco_model import load_model
from .task_env import TaskEnv, check_actions

DEFAULT_HORIZON = 100
"""Steps per episode (the PyTorch reference and ProMP; the paper used 200, with dt 0.01 for
HalfCheetah and 0.02 for Ant)."""

PHYSICS: tuple[str, ...] = ("gymnasium", "rllab_dt")
"""How the robot's physics advances per action.

``gymnasium``: the v5 models' own, five physics steps of 0.01 s (``dt = 0.05``).
``rllab_dt``: the paper's time stepping, one physics step per action of :data:`RLLAB_TIMESTEP`
(rllab's models set ``frame_skip = 1``), so one second of motion takes 2.5x (Ant) or 5x
(HalfCheetah) the decisions; the paper's episodes were 200 such steps (``horizon=200``). Only
the time stepping is rllab's: the model (contacts, actuators, start height, reset noise) stays
gymnasium's.
"""
ROBOTS: dict[str, type] = {"half_cheetah": HalfCheetahEnv, "ant": AntEnv}
"""gymnasium's robot environment of each ``LocomotionFamily.robot``."""
RLLAB_TIMESTEP: dict[str, float] = {"half_cheetah": 0.01, "ant": 0.02}
"""rllab's physics step per robot (its ``half_cheetah.xml`` and ``ant.xml``), in seconds."""


# --- task distributions ----------------------------------------------------------------------
def _sample_velocity(high: float) -> Callable[[int, np.random.Generator], list[dict[str, Any]]]:
    def sample(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": float(v)} for v in rng.uniform(0.0, high, size=n)]

    return sample


def _sample_direction(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], size=n)]


def _sample_goal(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [{"goal": g} for g in rng.uniform(-3.0, 3.0, size=(n, 2))]


# --- the task-dependent reward term ----------------------------------------------------------
def _velocity_term(bonus: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def term(velocity: np.ndarray, xy: np.ndarray, task: np.ndarray) -> np.ndarray:
        return -np.abs(velocity - task[:, 0]) + bonus

    return term


def _direction_term(velocity: np.ndarray, xy: np.ndarray, task: np.ndarray) -> np.ndarray:
    return task[:, 0] * velocity


def _goal_term(velocity: np.ndarray, xy: np.ndarray, task: np.ndarray) -> np.ndarray:
    return -np.abs(xy - task).sum(axis=1) + 4.0


@dataclass(frozen=True)
class LocomotionFamily:
    """One task family: its robot, task distribution and reward.

    Attributes:
        name: e.g. ``"HalfCheetahVel"``.
        robot: ``"half_cheetah"`` or ``"ant"``.
        task_key: the task dict's key (``velocity``, ``direction`` or ``goal``).
        sample_tasks: ``(n, rng) -> n task dicts``.
        task_term: ``(velocity (N,), xy (N, 2), task (N, k)) -> (N,)``, the task's reward term.
        ctrl_cost_weight: weight of ``‖a‖²``.
        observes_position: whether the observation starts with the torso's ``x, y`` (AntGoal:
            the way to a goal depends on where the robot is; gymnasium leaves them out).
    """

    name: str
    robot: str
    task_key: str
    sample_tasks: Callable[[int, np.random.Generator], list[dict[str, Any]]]
    task_term: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ctrl_cost_weight: float
    observes_position: bool = False

    @property
    def task_size(self) -> int:
        """Numbers in a task: 2 for a goal (x, y), 1 for a velocity or a direction."""
        return 2 if self.task_key == "goal" else 1

    def task_array(self, tasks: list[dict[str, Any]]) -> np.ndarray:
        """Tasks as a float64 array ``(N, k)`` (k = 1, or 2 for goals).

        Raises:
            ValueError: a task without the family's key, of the wrong size, not finite, or out
                of range (a direction is −1 or +1; velocities and goals within ±100).
        """
        rows = []
        for task in tasks:
            if not isinstance(task, dict) or self.task_key not in task:
                raise ValueError(
                    f"a {self.name} task needs a {self.task_key!r} entry, got {task!r}"
                )
            try:
                value = np.asarray(task[self.task_key], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name} task {task!r} is not numeric") from None
            if value.size != self.task_size:
                raise ValueError(
                    f"{self.name} task {task!r}: {self.task_key} must be "
                    f"{'an (x, y) pair' if self.task_size == 2 else 'one number'}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{self.name} task {task!r} is not finite")
            if self.task_key == "direction" and abs(value[0]) != 1.0:
                raise ValueError(f"{self.name} task {task!r}: direction must be -1 or +1")
            if np.any(np.abs(value) > 100.0):
                raise ValueError(f"{self.name} task {task!r} is out of range (±100)")
            rows.append(value)
        return np.stack(rows) if rows else np.zeros((0, self.task_size))


ANT_CONTACT_COST_WEIGHT = 5e-4  # 0.5 * 1e-3 in the PyTorch reference
ANT_SURVIVE_REWARD = 0.05

FAMILIES: dict[str, LocomotionFamily] = {
    f.name: f
    for f in (
        LocomotionFamily("HalfCheetahVel", "half_cheetah", "velocity", _sample_velocity(2.0),
                         _velocity_term(0.0), 0.05),
        LocomotionFamily("HalfCheetahDir", "half_cheetah", "direction", _sample_direction,
                         _direction_term, 0.05),
        LocomotionFamily("AntVel", "ant", "velocity", _sample_velocity(3.0), _velocity_term(1.0),
                         0.005),
        LocomotionFamily("AntDir", "ant", "direction", _sample_direction, _direction_term, 0.005),
        LocomotionFamily("AntGoal", "ant", "goal", _sample_goal, _goal_term, 0.005,
                         observes_position=True),
    )
}  # fmt: skip


def locomotion_reward(
    family: LocomotionFamily,
    velocity: np.ndarray,
    xy: np.ndarray,
    actions: np.ndarray,
    contact_forces: np.ndarray | None,
    tasks: np.ndarray,
) -> np.ndarray:
    """Reward of ``N`` environments after one step.

    Args:
        velocity: ``(N,)`` forward velocity (m/s).
        xy: ``(N, 2)`` torso position after the step.
        actions: ``(N, action_dim)`` the raw actions (the cost is on the raw action, as gymnasium).
        contact_forces: ``(N, n_bodies, 6)`` external contact forces (Ant), else None.
        tasks: ``(N, k)`` from :meth:`LocomotionFamily.task_array`.

    Returns:
        ``(N,)`` float64 rewards.
    """
    reward = family.task_term(velocity, xy, tasks) - family.ctrl_cost_weight * np.square(
        actions
    ).sum(axis=1)
    if family.robot == "ant":
        assert contact_forces is not None
        clipped = np.clip(contact_forces, -1.0, 1.0).reshape(len(reward), -1)
        reward = reward - ANT_CONTACT_COST_WEIGHT * np.square(clipped).sum(axis=1)
        reward = reward + ANT_SURVIVE_REWARD
    return reward


def ant_is_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: state finite and torso height in [0.2, 1.0] (gymnasium's Ant rule)."""
    finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
    return finite & (qpos[:, 2] >= 0.2) & (qpos[:, 2] <= 1.0)


class _LocomotionTaskEnv(TaskEnv):
    """The task interface and the task reward on top of a gymnasium v5 robot.

    The horizon is enforced here (truncated at step ``horizon``), so the registered ids carry no
    ``max_episode_steps``; the robot's own reward is replaced by the family's.
    """

    family: LocomotionFamily

    def __init__(
        self,
        horizon: int = DEFAULT_HORIZON,
        task: dict[str, Any] | None = None,
        physics: str = "gymnasium",
        **kwargs: Any,
    ) -> None:
        """The family's robot with the task interface.

        Args:
            horizon: steps per episode (truncated after them).
            task: a task to pin (else one is drawn at every reset).
            physics: one of :data:`PHYSICS`.
            **kwargs: the gymnasium robot's own arguments (``frame_skip`` only with the
                ``gymnasium`` physics).
        """
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if physics not in PHYSICS:
            raise ValueError(f"physics must be one of {', '.join(PHYSICS)}; got {physics!r}")
        self.horizon = horizon
        self.physics = physics
        self._timestep = RLLAB_TIMESTEP[self.family.robot] if physics == "rllab_dt" else None
        if self._timestep is not None:
            if kwargs.get("frame_skip", 1) != 1:
                raise ValueError(f"physics {physics!r} steps once per action; drop frame_skip")
            kwargs["frame_skip"] = 1
        if self.family.robot == "ant":
            kwargs.setdefault(
                "exclude_current_positions_from_observation", not self.family.observes_position
            )
        robot = ROBOTS[self.family.robot]
        robot.__init__(self, **kwargs)
        # gymnasium's robots record their own arguments for pickling; ours rebuild from these.
        EzPickle.__init__(self, horizon=horizon, task=task, physics=physics, **kwargs)
        self._task: dict[str, Any] | None = None
        self._task_array: np.ndarray | None = None
        self._pinned = False
        self._elapsed = 0
        if task is not None:
            self.set_task(task)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """Gymnasium's model loading (with its offscreen buffer sizes), by :func:`load_model`;
        with ``rllab_dt`` physics, the model's time step becomes rllab's."""
        model = load_model(self.fullpath)  # type: ignore[attr-defined]
        if self._timestep is not None:
            model.opt.timestep = self._timestep
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)  # type: ignore[attr-defined]
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)  # type: ignore[attr-defined]
        return model, mujoco.MjData(model)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return self.family.sample_tasks(n, rng)

    def set_task(self, task: dict[str, Any]) -> None:
        self._task_array = self.family.task_array([task])
        self._task = dict(task)
        self._pinned = True

    @property
    def task(self) -> dict[str, Any]:
        if self._task is None:
            raise RuntimeError("no task set: call set_task() or reset()")
        return copy.deepcopy(self._task)  # goals are arrays: never hand out our own

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        observation, info = super().reset(seed=seed, options=options)  # type: ignore[misc]
        if options and "task" in options:
            self.set_task(options["task"])
        elif not self._pinned:
            # No task pinned: draw one from the env's own generator (seeded by `seed`).
            task = self.family.sample_tasks(1, self.np_random)[0]  # type: ignore[attr-defined]
            self._task_array, self._task = self.family.task_array([task]), task
        self._elapsed = 0
        return observation, info

    def step(self, action: np.ndarray):  # type: ignore[override]
        if self._task_array is None:
            raise RuntimeError("call reset() before step()")
        action = check_actions(action, self.action_space.shape)  # type: ignore[attr-defined]
        data = self.data  # type: ignore[attr-defined]
        x_before = self._x_position()
        self.do_simulation(action, self.frame_skip)  # type: ignore[attr-defined]
        x_after = self._x_position()
        velocity = (x_after - x_before) / self.dt  # type: ignore[attr-defined]
        observation = self._get_obs()  # type: ignore[attr-defined]
        is_ant = self.family.robot == "ant"
        xy = data.qpos[:2].copy() if is_ant else np.array([data.qpos[0], 0.0])
        reward = locomotion_reward(
            self.family,
            np.array([velocity]),
            xy[None],
            np.asarray(action, dtype=np.float64)[None],
            data.cfrc_ext[None] if is_ant else None,
            self._task_array,
        )[0]
        terminated = bool(is_ant and not ant_is_healthy(data.qpos[None], data.qvel[None])[0])
        self._elapsed += 1
        truncated = self._elapsed >= self.horizon
        info = {"x_velocity": velocity, "x_position": x_after, "task": self.task}
        return observation, float(reward), terminated, truncated, info

    def _x_position(self) -> float:
        data = self.data  # type: ignore[attr-defined]
        return float(data.xpos[1, 0] if self.family.robot == "ant" else data.qpos[0])


class HalfCheetahVelEnv(_LocomotionTaskEnv, HalfCheetahEnv):
    """HalfCheetah running at a target velocity v* ~ U[0, 2]."""

    family = FAMILIES["HalfCheetahVel"]


class HalfCheetahDirEnv(_LocomotionTaskEnv, HalfCheetahEnv):
    """HalfCheetah running forward (d = +1) or backward (d = −1)."""

    family = FAMILIES["HalfCheetahDir"]


class AntVelEnv(_LocomotionTaskEnv, AntEnv):
    """Ant running at a target velocity v* ~ U[0, 3]."""

    family = FAMILIES["AntVel"]


class AntDirEnv(_LocomotionTaskEnv, AntEnv):
    """Ant running forward (d = +1) or backward (d = −1) along x."""

    family = FAMILIES["AntDir"]


class AntGoalEnv(_LocomotionTaskEnv, AntEnv):
    """Ant walking to a goal position g ~ U[−3, 3]²."""

    family = FAMILIES["AntGoal"]


SINGLE_ENVS: dict[str, type[_LocomotionTaskEnv]] = {
    "HalfCheetahVel": HalfCheetahVelEnv,
    "HalfCheetahDir": HalfCheetahDirEnv,
    "AntVel": AntVelEnv,
    "AntDir": AntDirEnv,
    "AntGoal": AntGoalEnv,
}
