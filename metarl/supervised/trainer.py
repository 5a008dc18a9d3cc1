"""Supervised MAML meta-training: one loop, read top to bottom.

Each iteration: sample a meta-batch of tasks → adapt θ to every task's support set (all tasks
at once, as one task batch) → query loss at the adapted θ'ᵢ, averaged over tasks → Adam step
on θ (and on the inner step sizes if they are learnable) → log → checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metarl.config import to_dict
from metarl.core import InnerStepSize, adapt, expand_to_tasks, get_params, task_forward
from metarl.run import (
    CHECKPOINT,
    MetricsLog,
    adam,
    atomic_torch_save,
    iteration_bar,
    setup_cpu,
)
from metarl.supervised.tasks import TaskBatch


@dataclass
class MetaTrainSetup:
    """What differs between supervised problems; the loop itself is shared."""

    model: nn.Module
    step_size: InnerStepSize
    sample_batch: Callable[[torch.Generator], TaskBatch]
    """Draws one meta-batch (on the CPU) from the task generator."""
    task_losses: Callable[[Tensor, Tensor], Tensor]
    """(predictions, targets) with a task dimension -> per-task losses ``(n_tasks,)``."""
    task_metrics: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None
    """Optional extra per-batch metrics (e.g. accuracy) on the query set."""
    query_inputs: Callable[[TaskBatch], tuple[Tensor, ...]] | None = None
    """The model's inputs for the query pass; default ``(query_x,)``. A model whose query
    predictions also depend on the support set (BatchNorm with support statistics) gets
    ``(query_x, support_x)``."""


class NonFiniteLossError(FloatingPointError):
    """The meta-loss became NaN or infinite; the last checkpoint is left untouched."""


def meta_train(
    config: Any,
    setup: MetaTrainSetup,
    run_dir: Path,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
) -> nn.Module:
    """Meta-train ``setup.model`` with MAML for ``config.iterations`` iterations.

    Reads ``seed, device, num_threads, iterations, meta_batch_size, meta_lr, inner_steps,
    meta_gradient, fd_epsilon, log_every, checkpoint_every, tensorboard`` from ``config``.
    With ``resume_state`` (a checkpoint) the run continues exactly where it stopped: the model,
    optimiser, step sizes, task generator and torch RNG are all restored.

    Raises:
        NonFiniteLossError: the meta-loss is NaN/inf (the previous checkpoint stays intact).
    """
    setup_cpu(config.num_threads)
    device = torch.device(config.device)
    model, step_size = setup.model.to(device), setup.step_size.to(device)
    meta_params = list(model.parameters()) + list(step_size.parameters())
    optimizer = adam(meta_params, config.meta_lr)
    task_gen = torch.Generator().manual_seed(config.seed)
    start, elapsed_before = 0, 0.0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        step_size.load_state_dict(resume_state["step_size"])
        optimizer.load_state_dict(resume_state["optimizer"])
        task_gen.set_state(resume_state["task_generator"])
        torch.set_rng_state(resume_state["torch_rng"])
        start = resume_state["iteration"]
        elapsed_before = resume_state.get("elapsed", 0.0)  # older checkpoints lack it
    started = time.perf_counter()

    def checkpoint(iteration: int) -> None:
        state = {
            "config": to_dict(config),
            "iteration": iteration,
            "model": model.state_dict(),
            "step_size": step_size.state_dict(),
            "optimizer": optimizer.state_dict(),
            "task_generator": task_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "elapsed": elapsed_before + time.perf_counter() - started,  # wall seconds of training
        }
        atomic_torch_save(state, run_dir / CHECKPOINT)

    log = MetricsLog(run_dir, config.tensorboard, resume_iteration=start if resume_state else None)
    window: dict[str, Tensor] = {}
    window_start = time.perf_counter()
    bar = iteration_bar(config, start, progress)
    try:
        for iteration in bar:
            # --- sample a meta-batch of tasks --------------------------------------------------
            batch = setup.sample_batch(task_gen).to(device)
            n_tasks = batch.support_x.shape[0]

            # --- inner loop: adapt θ to every task's support set, all tasks at once -----------
            support_losses: list[Tensor] = []

            def support_loss(params: dict[str, Tensor]) -> Tensor:
                losses = setup.task_losses(
                    task_forward(model, params, batch.support_x), batch.support_y
                )
                support_losses.append(losses.detach())
                return losses

            theta = expand_to_tasks(get_params(model), n_tasks)
            adapted = adapt(
                support_loss,
                theta,
                step_size,
                config.inner_steps,
                config.meta_gradient,
                config.fd_epsilon,
            )

            # --- outer loss at the adapted parameters, mean over tasks ------------------------
            query_in = (batch.query_x,) if setup.query_inputs is None else setup.query_inputs(batch)
            query_pred = task_forward(model, adapted, *query_in)
            meta_loss = setup.task_losses(query_pred, batch.query_y).mean()
            if not torch.isfinite(meta_loss):
                kept = (run_dir / CHECKPOINT).exists()
                raise NonFiniteLossError(
                    f"the meta-loss is not finite ({meta_loss.item()}) at iteration {iteration}; "
                    + ("the last checkpoint is intact. " if kept else "")
                    + "Try a smaller meta_lr or inner_lr."
                )

            # --- meta-update ------------------------------------------------------------------
            optimizer.zero_grad(set_to_none=True)
            meta_loss.backward()
            optimizer.step()

            # --- log and checkpoint -----------------------------------------------------------
            values = {"meta/query_loss": meta_loss.detach()}
            if support_losses:
                values["inner/support_loss_pre"] = support_losses[0].mean()
            if setup.task_metrics is not None:
                with torch.no_grad():
                    for key, v in setup.task_metrics(query_pred, batch.query_y).items():
                        values[f"meta/{key}"] = v
            for key, v in values.items():
                window[key] = window.get(key, 0.0) + v
            done = iteration + 1
            if done % config.log_every == 0 or done == config.iterations:
                n = config.log_every if done % config.log_every == 0 else done % config.log_every
                means = {k: float(v) / n for k, v in window.items()}
                means["perf/iterations_per_second"] = n / (time.perf_counter() - window_start)
                log.write(done, means)
                bar.set_postfix(loss=f"{means['meta/query_loss']:.4f}")
                window, window_start = {}, time.perf_counter()
            if done % config.checkpoint_every == 0 or done == config.iterations:
                checkpoint(done)
    finally:
        # An interruption keeps the last periodic checkpoint as it is: a resume from it replays
        # the same tasks and gives the same numbers as an uninterrupted run.
        bar.close()
        log.close()
    return model
