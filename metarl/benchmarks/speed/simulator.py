"""``speed-simulator``: environment steps per second on HalfCheetah-vel, side by side.

* ``batched simulator`` — :class:`metarl.envs.BatchedLocomotion` (all cores), including one
  policy forward (a 100-100 MLP on the whole batch) per step, as the sampler runs it;
* ``batched simulator, 1 thread`` — the same on one core;
* ``gymnasium SyncVectorEnv`` — gymnasium's own vector env over the single environments, with
  the same policy forward per step;
* ``bare mj_step loop`` — ``mj_step(model, data, nstep=5)`` over the same number of ``MjData``
  on one core: no policy, no observations, no rewards — the physics alone.

The variants run in interleaved rounds in one process; the median of the rounds is reported.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from metarl.benchmarks.common import machine_info
from metarl.core import MLP

FAMILY = "HalfCheetahVel"


def _policy(obs_dim: int, act_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    torch.manual_seed(0)
    net = MLP((obs_dim, 100, 100, act_dim))

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    return act


def _variants(num_envs: int) -> dict[str, Callable[[int], None]]:
    from metarl.envs import BatchedLocomotion

    rng = np.random.default_rng(0)
    variants: dict[str, Callable[[int], None]] = {}
    for name, threads in (("batched simulator", None), ("batched simulator, 1 thread", 1)):
        env = BatchedLocomotion(FAMILY, num_envs, horizon=10**9, threads=threads, seed=0)
        env.set_tasks(env.sample_tasks(num_envs, rng))
        act = _policy(env.observation_dim, env.action_dim)

        def run(steps: int, env: BatchedLocomotion = env, act=act) -> None:
            obs = env.reset()
            for _ in range(steps):
                obs = env.step(act(obs)).observation

        variants[name] = run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sync = gym.vector.SyncVectorEnv(
            [lambda: gym.make(f"metarl/{FAMILY}-v0", horizon=10**9) for _ in range(num_envs)]
        )
    act_sync = _policy(sync.single_observation_space.shape[0], sync.single_action_space.shape[0])

    def run_sync(steps: int) -> None:
        obs, _ = sync.reset(seed=0)
        for _ in range(steps):
            obs, *_ = sync.step(act_sync(obs))

    variants["gymnasium SyncVectorEnv"] = run_sync

    model = BatchedLocomotion(FAMILY, 1, threads=1).model
    datas = [mujoco.MjData(model) for _ in range(num_envs)]
    ctrl = rng.uniform(-1, 1, size=(num_envs, model.nu))

    def run_bare(steps: int) -> None:
        for _ in range(steps):
            for data, u in zip(datas, ctrl):
                data.ctrl[:] = u
                mujoco.mj_step(model, data, nstep=5)

    variants["bare mj_step loop (1 core)"] = run_bare
    return variants


def bench_locomotion(
    num_envs: int = 200, steps: int = 50, rounds: int = 3, progress: bool = True
) -> dict[str, Any]:
    """Env-steps/s of every variant (see the module docstring)."""
    torch.set_num_threads(1)
    variants = _variants(num_envs)
    for run in variants.values():  # warm-up
        run(5)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run(steps)
            rates[name].append(num_envs * steps / (time.perf_counter() - start))
        if progress:
            print(f"  round {r + 1}/{rounds} done", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    batched, sync = median["batched simulator"], median["gymnasium SyncVectorEnv"]
    bare = median["bare mj_step loop (1 core)"]
    return {
        "benchmark": "locomotion",
        "setting": f"{FAMILY}, {num_envs} environments, {steps} steps per round, {rounds} rounds",
        "env_steps_per_second": median,
        "batched_vs_sync": batched / sync,
        "batched_vs_bare_loop": batched / bare,
        "machine": machine_info(),
    }


def format_locomotion(result: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_locomotion`'s result."""
    rates = result["env_steps_per_second"]
    bare = rates["bare mj_step loop (1 core)"]
    lines = [
        f"environment steps per second ({result['setting']})",
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores",
        "",
        "| variant | env-steps/s | vs SyncVectorEnv | vs bare loop |",
        "|---|---|---|---|",
    ]
    sync = rates["gymnasium SyncVectorEnv"]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:,.0f} | {rate / sync:.2f}x | {rate / bare:.0%} |")
    return "\n".join(lines)
