"""Test-time adaptation curves: a metric after 0, 1, ..., S gradient steps on the support set."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metarl.core import expand_to_tasks, get_params, inner_step, task_forward
from metarl.supervised.tasks import TaskBatch


def finetune_curve(
    model: nn.Module,
    batch: TaskBatch,
    step_size: float,
    steps: int,
    task_losses: Callable[[Tensor, Tensor], Tensor],
    task_metric: Callable[[Tensor, Tensor], Tensor] | None = None,
    chunk_size: int = 1000,
    query_inputs: Callable[[TaskBatch], tuple[Tensor, ...]] | None = None,
) -> Tensor:
    """Per-task query metric after each of ``0..steps`` plain gradient steps on the support set.

    Every task starts from the model's parameters and is adapted independently (all tasks of a
    chunk at once). Nothing is meta-learned, so the steps are first order and the model is not
    modified.

    Args:
        model: the network (its parameters are θ).
        batch: test tasks; ``support`` is what the model adapts on, ``query`` what it is scored on.
        step_size: α of every step.
        steps: number of gradient steps S.
        task_losses: per-task training loss ``(predictions, targets) -> (n_tasks,)``.
        task_metric: per-task score; default: ``task_losses`` on the query set.
        chunk_size: tasks adapted together (bounds memory).
        query_inputs: the model's inputs for the query pass; default ``(query_x,)`` (see
            :class:`metarl.supervised.trainer.MetaTrainSetup`).

    Returns:
        ``(steps + 1, n_tasks)``: row s is the query metric after s steps.
    """
    metric = task_metric or task_losses
    theta = {n: p.detach() for n, p in get_params(model).items()}
    rows: list[Tensor] = []
    for start in range(0, batch.support_x.shape[0], chunk_size):
        chunk = TaskBatch(*(t[start : start + chunk_size] for t in batch))
        params = expand_to_tasks(theta, chunk.support_x.shape[0])
        scores = []
        with torch.enable_grad():
            for s in range(steps + 1):
                with torch.no_grad():
                    inputs = (chunk.query_x,) if query_inputs is None else query_inputs(chunk)
                    pred = task_forward(model, params, *inputs)
                    scores.append(metric(pred, chunk.query_y))
                if s == steps:
                    break

                def support_loss(p: dict[str, Tensor]) -> Tensor:
                    return task_losses(task_forward(model, p, chunk.support_x), chunk.support_y)

                params = inner_step(
                    support_loss, params, step_size, s, mode="first_order", check_finite=False
                )
                params = {n: p.detach() for n, p in params.items()}
        rows.append(torch.stack(scores))
    return torch.cat(rows, dim=1)


def mean_ci95(values: Tensor) -> tuple[list[float], list[float]]:
    """Mean and 95% normal confidence half-width over the last dimension (tasks)."""
    values = values.double()
    n = values.shape[-1]
    mean = values.mean(dim=-1)
    std = values.std(dim=-1, unbiased=True) if n > 1 else torch.zeros_like(mean)
    half = 1.96 * std / n**0.5
    return mean.tolist(), half.tolist()
