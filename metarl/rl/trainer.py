"""MAML-TRPO meta-training: the loop that orchestrates one meta-iteration after another.

Per iteration: sample tasks → :func:`~metarl.rl.maml_trpo.sample_meta_batch` (support and query
episodes) → keep the best model so far → :func:`~metarl.rl.maml_trpo.meta_update` (natural
step and line search, Finn et al. 2017, Alg. 3 and App. A.2) → log → checkpoint. The algorithm
itself lives in :mod:`metarl.rl.maml_trpo`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.config import to_dict
from metarl.core import all_finite, get_params
from metarl.core.functional import Params
from metarl.distributed import ALONE, TaskReduction, init_world
from metarl.loop import CheckpointSchedule, deadline_passed, iteration_bar
from metarl.rl import maml_trpo
from metarl.rl.config import RLConfig
from metarl.rl.episodes import Episodes
from metarl.rl.maml_trpo import sample_meta_batch
from metarl.rl.policy import GaussianMLPPolicy, build_policy
from metarl.rl.task_envs import make_batched_env
from metarl.run import CHECKPOINT, MetricsLog, NullLog, atomic_torch_save, load_weights
from metarl.runtime import set_num_threads

META_UPDATES = {"maml_trpo": maml_trpo.meta_update}
"""The outer objective of each ``algorithm`` (``metarl.rl.config.RL_ALGORITHMS``)."""


def policy_statistics(policy: GaussianMLPPolicy) -> dict[str, float]:
    """``policy/std``, the mean action standard deviation σ, and ``policy/entropy``, the
    entropy of the Gaussian, ``Σ_j (log σ_j + ½ log 2πe)`` (nats), after the update."""
    with torch.no_grad():
        log_std = policy.log_std.clamp(min=policy.min_log_std)
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
    return {"policy/std": float(log_std.exp().mean()), "policy/entropy": float(entropy)}


def preflight(config: RLConfig) -> None:
    """Checks before a run directory is created: one meta-iteration's episodes fit in memory.

    A lower bound: every step of every episode of every inner step and the query keeps its
    observation, action, returns and advantages, and the policy's hidden activations.

    Raises:
        ConfigError: more than the available memory.
    """
    from metarl.runtime import check_memory

    env = make_batched_env(config.env, 1, config.horizon)
    per_step = env.observation_dim + env.action_dim + 8 + 2 * sum(config.hidden_sizes)
    steps = config.meta_batch_size * config.episodes_per_task * config.horizon
    check_memory(
        4.0 * per_step * steps * (config.inner_steps + 1),
        "meta_batch_size × episodes_per_task × horizon",
    )


def train(
    config: RLConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
    stop_at: float | None = None,
) -> GaussianMLPPolicy:
    """Meta-train a policy with MAML-TRPO for ``config.iterations`` iterations into ``run_dir``.

    With ``resume_state`` (a checkpoint of this experiment) the run continues exactly where it
    stopped: policy, task generator and action-noise generator are restored, so the result
    equals an uninterrupted run. With ``stop_at`` (a ``time.time()``) this session ends, with a
    checkpoint, at the first end of a ``log_every`` window after it.

    Every iteration adds its values to ``metrics.jsonl`` (window means over ``log_every``):
    ``returns/pre_adaptation`` and ``returns/post_adaptation`` (mean undiscounted episode return
    with θ and with θ'), ``meta/surrogate_before``/``meta/surrogate_after`` (loss at θ and at the
    accepted θ), ``meta/kl``, ``meta/line_search_steps``, ``meta/accepted``,
    ``policy/std``/``policy/entropy`` (:func:`policy_statistics`), ``time/sampling``/
    ``time/update`` (seconds; on several processes also ``time/communication``, the part of
    them spent in the sums), ``time/elapsed`` (wall seconds since the run started, across
    resumes) and ``sampling/env_steps`` (cumulative). The checkpoint keeps the wall seconds
    (``elapsed``) and the process's CPU seconds, all threads (``cpu_elapsed``: NaN for a run
    resumed from a checkpoint that did not count them; under torchrun, rank 0's), which other
    work on the machine inflates far less.

    The checkpoint also keeps the best model so far, for the paper's evaluation protocol
    (``eval_model: best``): ``best = {"iteration", "return", "model"}``, the parameters that
    sampled the highest ``returns/post_adaptation`` of a single iteration, as they were before
    that iteration's update (so ``iteration`` updates had been applied).

    Under ``torchrun`` (:mod:`metarl.distributed`) every process draws the same tasks, samples
    the episodes of its shard of them (with its rows of the whole batch's noise) and joins the
    sums of the meta-update; the logged returns are the whole batch's, and rank 0 alone writes.
    """
    set_num_threads(config.num_threads)
    config.warn_if_finite_differences_on_relu()
    n_tasks, n_episodes = config.meta_batch_size, config.episodes_per_task
    world = init_world(config.device)
    main = world is None or world.is_main
    shard = None if world is None else world.task_shard(n_tasks)
    reduction = ALONE if world is None else TaskReduction(world, n_tasks)
    mine = slice(0, n_tasks) if shard is None else slice(shard.start, shard.stop)
    env = make_batched_env(config.env, (mine.stop - mine.start) * n_episodes, config.horizon)
    if shard is not None:
        env.noise_rows = (shard.start * n_episodes, n_tasks * n_episodes)
    policy = build_policy(config)
    task_rng = np.random.default_rng(config.seed)
    action_noise = torch.Generator().manual_seed(config.seed)
    start, elapsed_before, cpu_before, env_steps = 0, 0.0, 0.0, 0
    best: dict[str, Any] | None = None
    if resume_state is not None:
        load_weights(policy, resume_state["model"], run_dir / CHECKPOINT)
        task_rng.bit_generator.state = resume_state["task_rng"]
        action_noise.set_state(resume_state["action_noise"])
        start = resume_state["iteration"]
        elapsed_before = resume_state["elapsed"]
        cpu_before = resume_state.get("cpu_elapsed", math.nan)  # unknown if not counted
        env_steps = resume_state["env_steps"]
        best = resume_state.get("best")  # None in checkpoints written before it was recorded
    theta: Params = get_params(policy)  # the policy's own leaves: accepted steps update them
    meta_update = META_UPDATES[config.algorithm]

    def checkpoint(iteration: int, elapsed: float, cpu_elapsed: float) -> None:
        if not all_finite(theta.values()):  # a good checkpoint is never replaced by a broken one
            raise FloatingPointError(
                f"the policy's parameters are not finite at iteration {iteration}; the last "
                "checkpoint is intact"
            )
        state = {
            "config": to_dict(config),
            "iteration": iteration,
            "model": policy.state_dict(),
            "task_rng": task_rng.bit_generator.state,
            "action_noise": action_noise.get_state(),
            "elapsed": elapsed,
            "cpu_elapsed": cpu_elapsed,
            "env_steps": env_steps,
            "best": best,
        }
        atomic_torch_save(state, run_dir / CHECKPOINT)

    resumed = start if resume_state else None
    log = MetricsLog(run_dir, config.tensorboard, resumed) if main else NullLog()
    window: dict[str, float] = {}
    bar = iteration_bar(config, start, progress and main)
    saves = CheckpointSchedule(config.checkpoint_every, config.checkpoint_minutes)
    started, cpu_started = time.perf_counter(), time.process_time()
    communicated = 0.0
    try:
        for iteration in bar:
            tick = time.perf_counter()
            # --- sample a meta-batch of tasks ----------------------------------------------------
            tasks = env.sample_tasks(n_tasks, task_rng)[mine]  # every process draws them all
            env.seed([config.seed, iteration])  # reset noise: the same after a resume

            # --- episodes with θ, inner REINFORCE step(s), query episodes with θ' -------------
            support, query = sample_meta_batch(
                env, tasks, n_episodes, policy, theta, config, action_noise, shard
            )
            sampled = time.perf_counter()
            pre_return, post_return, steps = _whole_batch(reduction, support, query)
            if math.isfinite(post_return) and (best is None or post_return > best["return"]):
                # θ as it sampled this return, before this iteration's update changes it
                model = {name: t.detach().clone() for name, t in policy.state_dict().items()}
                best = {"iteration": iteration, "return": post_return, "model": model}

            # --- the meta-update: natural step, line search; θ changes if a step is accepted --
            result = meta_update(policy, theta, support, query, config, iteration, reduction)
            updated, cpu_updated = time.perf_counter(), time.process_time()

            # --- log and checkpoint -------------------------------------------------------------
            env_steps += steps
            values = {
                "returns/pre_adaptation": pre_return,
                "returns/post_adaptation": post_return,
                "meta/surrogate_before": result.loss_before,
                "meta/surrogate_after": result.loss_after,
                "meta/kl": result.kl,
                "meta/line_search_steps": float(result.steps),
                "meta/accepted": float(result.accepted),
                **policy_statistics(policy),
                "time/sampling": sampled - tick,
                "time/update": updated - sampled,
            }
            if world is not None:  # in the sums, waiting for the slowest process included
                values["time/communication"] = world.communication_seconds - communicated
                communicated = world.communication_seconds
            for key, value in values.items():
                window[key] = window.get(key, 0.0) + value
            done = iteration + 1
            elapsed = elapsed_before + (updated - started)
            window_ends = done % config.log_every == 0
            session_over = window_ends and deadline_passed(stop_at)
            if window_ends or done == config.iterations:
                n = config.log_every if window_ends else done % config.log_every
                means = {key: value / n for key, value in window.items()}
                means["time/elapsed"] = elapsed
                means["sampling/env_steps"] = float(env_steps)
                log.write(done, means)
                bar.set_postfix(
                    before=f"{means['returns/pre_adaptation']:.1f}",
                    after=f"{means['returns/post_adaptation']:.1f}",
                )
                window = {}
            last = done == config.iterations or session_over
            if main and (saves.due(done, window_ends) or last):
                checkpoint(done, elapsed, cpu_before + cpu_updated - cpu_started)
                saves.saved()
            if session_over:
                break
    finally:
        # An interruption keeps the last checkpoint as it is: a resume from it replays
        # the same tasks and noise and gives the same numbers as an uninterrupted run.
        bar.close()
        log.close()
    return policy


def _whole_batch(
    reduction: TaskReduction, support: list[Episodes], query: Episodes
) -> tuple[float, float, int]:
    """The meta-batch's mean return before and after the adaptation, and the environment steps
    of its episodes, over every process (one sum)."""
    values = torch.tensor(
        [
            float(reduction.share(support[0].task_returns())),
            float(reduction.share(query.task_returns())),
            float(sum(float(e.masks.sum()) for e in (*support, query))),
        ],
        dtype=torch.float64,
    )
    pre, post, steps = reduction.total(values).tolist()
    return pre, post, int(steps)
