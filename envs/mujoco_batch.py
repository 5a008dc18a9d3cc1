"""A batched MuJoCo simulator: many locomotion environments, one call per policy step.

Meta-RL samples ``tasks x episodes`` environments in lock-step (800 for HalfCheetah-vel at the
reference config), so stepping them is the wall-clock bottleneck. Here all environments share
one ``MjModel`` and each has its own ``MjData``; a step sets every control, advances each
``MjData`` by ``frame_skip`` physics steps with ``mujoco.mj_step(..., nstep=frame_skip)`` and
copies the state into preallocated arrays. The environments are split into contiguous chunks
run by a small thread pool: the MuJoCo bindings release the GIL inside ``mj_step``, so the
chunks run on all cores. Rewards, termination and observations are then computed for the whole
batch at once with the same vectorised functions as the single environments
(:mod:`metarl.envs.locomotion`), and the result equals gymnasium's environment step for step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from .locomotion import (
    DEFAULT_HORIZON,
    FAMILIES,
    SINGLE_ENVS,
    ant_is_healthy,
    locomotion_reward,
    mujoco,  # through locomotion, whose import error names the extra that brings it
)
from .task_env import BatchedTaskEnv, BatchStep


class BatchedLocomotion(BatchedTaskEnv):
    """``num_envs`` environments of one locomotion family, stepped together.

    Args:
        family: ``HalfCheetahVel``, ``HalfCheetahDir``, ``AntVel``, ``AntDir`` or ``AntGoal``.
        num_envs: number of environments N.
        horizon: steps per episode.
        threads: worker threads for the physics (default: this process's share of the CPUs,
            at most 8; the CPUs divided by ``LOCAL_WORLD_SIZE`` under ``torchrun``).
        seed: seed of the reset noise (see :meth:`reset` for per-environment seeds).
        physics: ``gymnasium`` or ``rllab_dt`` (:data:`metarl.envs.locomotion.PHYSICS`).

    Finished environments (Ant fell over, or the horizon) are frozen and return reward 0, as
    :class:`~metarl.envs.task_env.BatchedTaskEnv` specifies.
    """

    def __init__(
        self,
        family: str,
        num_envs: int,
        horizon: int = DEFAULT_HORIZON,
        threads: int | None = None,
        seed: int | None = None,
        physics: str = "gymnasium",
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown locomotion family {family!r}; one of {sorted(FAMILIES)}")
        self.family = FAMILIES[family]
        # The gymnasium robot gives the exact model, initial state, dt and reset noise.
        reference = SINGLE_ENVS[family](horizon=horizon, physics=physics)
        self.model = reference.model
        self.init_qpos = reference.init_qpos.copy()
        self.init_qvel = reference.init_qvel.copy()
        self.frame_skip = reference.frame_skip
        self.dt = reference.dt
        self.reset_noise_scale = reference._reset_noise_scale
        self.is_ant = self.family.robot == "ant"
        # x (and y for Ant) are not observed, unless the family observes the position
        excluded = reference._exclude_current_positions_from_observation
        self._obs_skip = (2 if self.is_ant else 1) if excluded else 0
        reference.close()
        obs_dim = self.model.nq - self._obs_skip + self.model.nv
        if self.is_ant:
            obs_dim += (self.model.nbody - 1) * 6
        super().__init__(num_envs, obs_dim, self.model.nu, horizon)

        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        n = num_envs
        self.qpos = np.zeros((n, self.model.nq))
        self.qvel = np.zeros((n, self.model.nv))
        self.torso_xy = np.zeros((n, 2))
        self.cfrc_ext = np.zeros((n, self.model.nbody, 6)) if self.is_ant else None
        self._tasks: np.ndarray | None = None
        self._task_dicts: list[dict[str, Any]] = []
        self._done = np.ones(n, dtype=bool)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)
        self._last_obs = np.zeros((n, obs_dim), dtype=np.float32)
        self._elapsed = np.zeros(n, dtype=np.int64)  # steps of each environment's episode
        self._started = False
        self._rng, _ = seeding.np_random(seed)
        n_threads = min(threads or _cpus_of_this_process(), 8, n)
        bounds = np.linspace(0, n, n_threads + 1).astype(int)
        self._chunks = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        self._pool = ThreadPoolExecutor(len(self._chunks)) if len(self._chunks) > 1 else None
        self._ctrl = np.zeros((n, self.model.nu))

    # --- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return self.family.sample_tasks(n, rng)

    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._check_tasks(tasks)
        self._tasks = self.family.task_array(tasks)
        self._task_dicts = [dict(t) for t in tasks]

    def task_array(self, tasks: list[dict[str, Any]]) -> np.ndarray:
        return self.family.task_array(tasks)

    def seed(self, seed: int | list[int]) -> None:
        """Reseed the initial-state noise of the following resets."""
        self._rng = np.random.default_rng(seed)

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self._task_dicts]

    # --- simulation --------------------------------------------------------------------------
    def reset(
        self, indices: Sequence[int] | None = None, seeds: list[int] | None = None
    ) -> np.ndarray:
        """Start new episodes: qpos = init + U(±0.1), qvel = init + 0.1·N(0, 1) per environment.

        Args:
            indices: the environments to reset (default: all); the others keep running.
            seeds: one seed per reset environment; the noise is then drawn exactly as
                gymnasium's ``env.reset(seed=seeds[i])`` draws it (used to check equality).
                Default: from this simulator's own generator.
        """
        if self._tasks is None:
            raise RuntimeError("no tasks set: call set_tasks() before reset()")
        index = self._reset_indices(indices)
        n, nq, nv, s = len(index), self.model.nq, self.model.nv, self.reset_noise_scale
        if seeds is not None:
            if len(seeds) != n:
                raise ValueError(
                    f"seeds must hold one seed per reset environment ({n}), got {len(seeds)}"
                )
            pos_noise, vel_noise = np.empty((n, nq)), np.empty((n, nv))
            for i, seed in enumerate(seeds):
                rng, _ = seeding.np_random(seed)
                pos_noise[i] = rng.uniform(-s, s, size=nq)
                vel_noise[i] = s * rng.standard_normal(nv)
        else:
            first, total = self.noise_rows or (0, n)
            if n == self.num_envs:  # all of this batch: its rows of the whole batch's noise
                rows = slice(first, first + n)
                pos_noise = self._rng.uniform(-s, s, size=(total, nq))[rows]
                vel_noise = s * self._rng.standard_normal((total, nv))[rows]
            else:
                pos_noise = self._rng.uniform(-s, s, size=(n, nq))
                vel_noise = s * self._rng.standard_normal((n, nv))
        for row, i in enumerate(index):
            data = self.datas[i]
            mujoco.mj_resetData(self.model, data)
            data.qpos[:] = self.init_qpos + pos_noise[row]
            data.qvel[:] = self.init_qvel + vel_noise[row]
            mujoco.mj_forward(self.model, data)
        self._gather(index)
        self._done[index] = False
        self._terminated[index] = False
        self._truncated[index] = False
        self._elapsed[index] = 0
        self._started = True
        self._last_obs[index] = self._observations()[index]
        return self._last_obs.copy()

    def _simulate(self, chunk: Sequence[int]) -> None:
        """Advance the running environments of ``chunk`` by one environment step (GIL released)."""
        model, skip = self.model, self.frame_skip
        for i in chunk:
            if self._done[i]:
                continue
            data = self.datas[i]
            data.ctrl[:] = self._ctrl[i]
            mujoco.mj_step(model, data, nstep=skip)
            if self.is_ant:
                # cfrc_ext is only filled by mj_rnePostConstraint (gymnasium calls it too);
                # without it the 78 contact-force observations would silently be zero.
                mujoco.mj_rnePostConstraint(model, data)
        self._gather(chunk)

    def _gather(self, chunk: Sequence[int]) -> None:
        for i in chunk:
            data = self.datas[i]
            self.qpos[i] = data.qpos
            self.qvel[i] = data.qvel
            if self.is_ant:
                self.torso_xy[i] = data.xpos[1, :2]
                self.cfrc_ext[i] = data.cfrc_ext  # type: ignore[index]

    def _observations(self) -> np.ndarray:
        parts = [self.qpos[:, self._obs_skip :], self.qvel]
        if self.is_ant:
            parts.append(np.clip(self.cfrc_ext[:, 1:], -1.0, 1.0).reshape(self.num_envs, -1))  # type: ignore[index]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _x_positions(self) -> np.ndarray:
        return self.torso_xy[:, 0].copy() if self.is_ant else self.qpos[:, 0].copy()

    def step(self, actions: np.ndarray) -> BatchStep:
        if self._tasks is None or not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        running = ~self._done
        x_before = self._x_positions()
        self._ctrl[:] = actions
        if self._pool is None:
            self._simulate(range(self.num_envs))
        else:
            list(self._pool.map(self._simulate, self._chunks))
        velocity = (self._x_positions() - x_before) / self.dt
        xy = (
            self.qpos[:, :2]
            if self.is_ant
            else np.stack([self.qpos[:, 0], np.zeros(self.num_envs)], 1)
        )
        reward = locomotion_reward(self.family, velocity, xy, actions, self.cfrc_ext, self._tasks)
        self._elapsed += running
        terminated = (
            ~ant_is_healthy(self.qpos, self.qvel) if self.is_ant else np.zeros_like(running)
        )
        truncated = self._elapsed >= self.horizon
        observation = self._observations()
        # Environments that had already finished keep their last observation and flags.
        observation[~running] = self._last_obs[~running]
        reward = np.where(running, reward, 0.0).astype(np.float32)
        self._terminated |= running & terminated
        self._truncated |= running & truncated
        self._done |= self._terminated | self._truncated
        self._last_obs = observation
        return BatchStep(
            observation.copy(), reward, self._terminated.copy(), self._truncated.copy()
        )

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        # Garbage collection can run this on one of the pool's own threads (after an
        # interruption, say), which cannot join itself: let the idle workers exit on their own.
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
            self._pool = None


def _cpus_of_this_process() -> int:
    """The CPUs this process may use, shared with the other processes ``torchrun`` started on
    this machine (so that they do not oversubscribe the cores)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
