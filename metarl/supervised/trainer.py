"""Supervised meta-training: one loop for every algorithm, read top to bottom.

Each iteration: sample a meta-batch of tasks → the algorithm's outer objective on it (for MAML:
adapt θ to every task's support set at once, query loss at the adapted θ'ᵢ, mean over tasks) →
Adam step on θ and on the algorithm's own meta-parameters → log → checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, Problem
from metarl.algorithms.alignment import alignment_metrics, task_alignment
from metarl.config import ConfigError, to_dict
from metarl.core import InnerStepSize, TaskBatch, all_finite
from metarl.distributed import init_world
from metarl.loop import CheckpointSchedule, adam, deadline_passed, iteration_bar
from metarl.run import CHECKPOINT, MetricsLog, NullLog, atomic_torch_save, load_weights
from metarl.runtime import set_num_threads
from metarl.supervised.checkpoint import algorithm_state, kept_best
from metarl.supervised.meta_gradient import MetaGradient

Validation = Callable[[nn.Module, MetaAlgorithm], dict[str, float]]
"""Scores the current model on held-out tasks: ``(model, algorithm) -> {metric: value}``."""

BEST_BY = "val/accuracy"
"""The validation metric (higher is better) that chooses the best model a checkpoint keeps."""


class NonFiniteLossError(FloatingPointError):
    """The meta-loss or the meta-parameters became NaN or infinite; the last checkpoint is left
    untouched."""


def meta_train(
    config: Any,
    model: nn.Module,
    algorithm: MetaAlgorithm,
    problem: Problem,
    sample_batch: Callable[[torch.Generator], TaskBatch],
    run_dir: Path,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
    validate: Validation | None = None,
    stop_at: float | None = None,
) -> nn.Module:
    """Meta-train ``model`` with ``algorithm`` for ``config.iterations`` iterations.

    Args:
        config: reads ``seed, device, num_threads, iterations, meta_lr, meta_optimizer,
            meta_lr_schedule, meta_lr_min, step_size_lr, chunk_tasks, chunk_workers, log_every,
            checkpoint_every, checkpoint_minutes, tensorboard, align_every``.
        model: the network to meta-learn.
        algorithm: the meta-learning algorithm (its own parameters are meta-learned too).
        problem: how predictions are scored.
        sample_batch: draws one meta-batch (on the CPU) from the task generator.
        run_dir: the run directory (metrics, checkpoint).
        resume_state: a checkpoint to continue exactly where it stopped: model, algorithm,
            optimiser and task generator are restored.
        progress: show a progress bar.
        validate: scores the current model on held-out tasks (metric name -> value); called
            every ``config.val_every`` iterations, its values logged with that window's means.
        stop_at: a wall-clock deadline (``time.time()``) for this session: training stops at
            the first end of a ``log_every`` window after it, with a checkpoint there.

    With ``validate``, the checkpoint also keeps the best-validated model so far (for
    ``eval_model: best``): ``best``, the state dicts at the iteration whose validation gave the
    highest :data:`BEST_BY` (:func:`~metarl.supervised.checkpoint.kept_best`).

    Every ``log_every`` iterations ``metrics.jsonl`` gets the window means of the algorithm's
    metrics (``meta/query_loss``, ...), ``perf/iterations_per_second``, every ``align_every``
    iterations the gradient alignment of that iteration's tasks (``align/*``,
    :mod:`metarl.algorithms.alignment`) and, on several processes, ``time/communication``
    (seconds per iteration in the sums).

    Raises:
        NonFiniteLossError: the meta-loss is NaN/inf (the previous checkpoint stays intact).
    """
    set_num_threads(config.num_threads)
    config.warn_if_finite_differences_on_relu()
    device = torch.device(config.device)
    model, algorithm = model.to(device), algorithm.to(device)
    meta_params = [*model.parameters(), *algorithm.parameters()]
    groups = parameter_groups(config, meta_params, algorithm)
    optimizer = (
        adam(groups, config.meta_lr)
        if config.meta_optimizer == "adam"
        else torch.optim.SGD(groups, lr=config.meta_lr)
    )
    world = init_world(config.device)  # several processes under torchrun, else None
    main = world is None or world.is_main  # the one that writes the run directory
    if world is not None and config.time_budget:  # each process's clock would stop it elsewhere
        raise ConfigError("time_budget: a run under torchrun stops by iterations only")
    meta_gradient = MetaGradient(meta_params, config.chunk_tasks, config.chunk_workers, world)
    task_gen = torch.Generator().manual_seed(config.seed)
    start, elapsed_before, cpu_before = 0, 0.0, 0.0
    best: dict[str, Any] | None = None
    best_since = 0  # the first iteration whose validation may choose the best model
    if resume_state is not None:
        load_weights(model, resume_state["model"], run_dir / CHECKPOINT)
        load_weights(algorithm, algorithm_state(resume_state), run_dir / CHECKPOINT)
        optimizer.load_state_dict(resume_state["optimizer"])
        task_gen.set_state(resume_state["task_generator"])
        start = resume_state["iteration"]
        elapsed_before = resume_state.get("elapsed", 0.0)  # older checkpoints lack it
        cpu_before = resume_state.get("cpu_elapsed", math.nan)  # unknown if not counted
        best = resume_state.get("best")
        # a checkpoint from before best models were kept: earlier validations are unknown here
        best_since = resume_state.get("best_since", 0 if "best" in resume_state else start)
    started, cpu_started = time.perf_counter(), time.process_time()
    # the clock time_budget counts, and what earlier sessions of this run spent on it
    clock, budget_spent = (
        (time.process_time, cpu_before)
        if config.budget_clock == "cpu"
        else (time.perf_counter, elapsed_before)
    )
    budget_started = clock()
    if config.time_budget and not math.isfinite(budget_spent):
        raise ConfigError(
            "budget_clock: cpu, but this run's checkpoint did not count CPU time; resume it "
            "with its own clock"
        )

    def stop(what: str, iteration: int) -> NonFiniteLossError:
        kept = "the last checkpoint is intact. " if (run_dir / CHECKPOINT).exists() else ""
        return NonFiniteLossError(
            f"{what} at iteration {iteration}; {kept}Try a smaller meta_lr or inner_lr."
        )

    def checkpoint(iteration: int) -> None:
        moments = [t for s in optimizer.state.values() for t in s.values() if t.is_floating_point()]
        if not all_finite(moments):  # a good checkpoint is never replaced by a broken one
            raise stop("the optimiser's state is not finite", iteration)
        state = {
            "config": to_dict(config),
            "iteration": iteration,
            "model": model.state_dict(),
            "algorithm": algorithm.state_dict(),
            "optimizer": optimizer.state_dict(),
            "task_generator": task_gen.get_state(),
            "elapsed": elapsed_before + time.perf_counter() - started,  # wall seconds of training
            "cpu_elapsed": cpu_before + time.process_time() - cpu_started,  # the process's CPU s
            "best": best,
            "best_since": best_since,
        }
        atomic_torch_save(state, run_dir / CHECKPOINT)

    resumed = start if resume_state else None
    log = MetricsLog(run_dir, config.tensorboard, resumed) if main else NullLog()
    window: dict[str, Tensor] = {}
    window_start, window_size = time.perf_counter(), 0  # a resume may start mid-window
    communicated = 0.0
    # Per-task heads made from the support set (ProtoMAML, LEOPARD) are not θ: no alignment.
    # Alignment compares tasks with each other: a meta-batch of one task (Meta-Dataset's
    # episodes, one per meta-iteration) has none to compare.
    aligned = (
        config.align_every > 0
        and getattr(algorithm, "head", None) is None
        and config.meta_batch_size >= 2
    )
    bar = iteration_bar(config, start, progress and main)
    saves = CheckpointSchedule(config.checkpoint_every, config.checkpoint_minutes)
    try:
        for iteration in bar:
            if 0 < config.time_budget <= budget_spent:
                break  # a resumed run whose budget was spent trains nothing more
            # --- sample a meta-batch of tasks --------------------------------------------------
            batch = sample_batch(task_gen).to(device)

            # --- the algorithm's outer objective (MAML: inner loop, then the query loss) and its
            # gradient, for the whole meta-batch at once or chunk by chunk ----------------------
            step = meta_gradient(algorithm, model, batch, problem, iteration)
            if not torch.isfinite(step.loss):
                raise stop(f"the meta-loss is not finite ({step.loss.item()})", iteration)

            # --- meta-update ------------------------------------------------------------------
            if config.meta_lr_schedule != "constant":
                lr = meta_lr_at(config, iteration)
                for group in optimizer.param_groups:  # step sizes: step_size_lr, scaled alike
                    own = group.get("step_size_lr")
                    group["lr"] = lr if own is None else own * lr / (config.meta_lr or 1.0)
            optimizer.step()
            if not all_finite(meta_params):
                raise stop("the meta-update made the parameters non-finite", iteration)

            # --- log and checkpoint -----------------------------------------------------------
            for key, v in step.metrics.items():
                window[key] = window.get(key, 0.0) + v
            window_size += 1
            done = iteration + 1
            spent = budget_spent + clock() - budget_started
            out_of_time = 0 < config.time_budget <= spent  # an equal-budget comparison's end
            window_ends = done % config.log_every == 0
            # a session's deadline ends it where a window ends: the next session logs the rest
            session_over = window_ends and deadline_passed(stop_at)
            last = done == config.iterations or out_of_time or session_over
            if window_ends or last:
                n = window_size
                means = {k: float(v) / n for k, v in window.items()}
                means["perf/iterations_per_second"] = n / (time.perf_counter() - window_start)
                if main and aligned and done % config.align_every == 0:
                    # at θ after this update, on this iteration's tasks
                    alignment = task_alignment(model, problem, batch)
                    means.update(alignment_metrics(alignment))
                if main and validate is not None and done % config.val_every == 0:
                    means.update(validate(model, algorithm))  # at θ after this update
                    best = kept_best(best, means[BEST_BY], done, model, algorithm, best_since)
                if world is not None:  # seconds per iteration in the sums, waiting included
                    means["time/communication"] = (world.communication_seconds - communicated) / n
                    communicated = world.communication_seconds
                log.write(done, means)
                shown = {"loss": f"{means['meta/query_loss']:.4f}"}
                if "val/accuracy" in means:
                    shown["val_acc"] = f"{means['val/accuracy']:.4f}"
                bar.set_postfix(shown, refresh=False)  # the bar redraws on its own clock
                window, window_start, window_size = {}, time.perf_counter(), 0
            if main and (saves.due(done, window_ends) or last):
                checkpoint(done)
                saves.saved()
            if out_of_time or session_over:
                break
    finally:
        # An interruption keeps the last checkpoint as it is: a resume from it replays
        # the same tasks and gives the same numbers as an uninterrupted run.
        bar.close()
        log.close()
        meta_gradient.close()
    return model


def parameter_groups(
    config: Any, meta_params: list[nn.Parameter], algorithm: nn.Module
) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one at ``meta_lr``; with ``step_size_lr`` set, the
    algorithm's learnable inner step sizes in a second group at that rate."""
    step_sizes = {id(p): p for m in algorithm.modules() if isinstance(m, InnerStepSize)
                  for p in m.parameters()}  # fmt: skip
    if not config.step_size_lr or not step_sizes:
        return [{"params": meta_params}]
    rest = [p for p in meta_params if id(p) not in step_sizes]
    return [{"params": rest},
            {"params": list(step_sizes.values()), "lr": config.step_size_lr,
             "step_size_lr": config.step_size_lr}]  # fmt: skip


def meta_lr_at(config: Any, iteration: int) -> float:
    """The outer learning rate at ``iteration`` (0-based) under ``meta_lr_schedule``: constant;
    cosine from ``meta_lr`` to ``meta_lr_min`` (MAML++); or linear between them (Reptile)."""
    progress = iteration / max(config.iterations, 1)
    low, high = config.meta_lr_min, config.meta_lr
    if config.meta_lr_schedule == "cosine":
        return low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * progress))
    if config.meta_lr_schedule == "linear":
        return high + (low - high) * progress
    return high


def activation_bytes(model: nn.Module, *inputs: Tensor) -> int:
    """Bytes of every module's output in one forward pass of ``model`` on ``inputs``."""
    total = 0

    def count(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor) and not list(module.children()):
            total += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def check_meta_batch_memory(config: Any, model: nn.Module, support: Tensor, query: Tensor) -> None:
    """Refuse a meta-batch that cannot fit: one task's activations (``support``, ``query``: one
    task's inputs) times the tasks and the inner steps, a lower bound of what MAML keeps for
    its backward pass.

    Raises:
        ConfigError: more than the available memory.
    """
    from metarl.runtime import check_memory

    per_task = activation_bytes(model, support) * (config.inner_steps + 1)
    per_task += activation_bytes(model, query)
    check_memory(per_task * config.meta_batch_size, "meta_batch_size")
