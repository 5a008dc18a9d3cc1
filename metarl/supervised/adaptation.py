"""Test-time adaptation curves: a task's query score after 0, 1, ..., S adaptation steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, Problem, StepSizes
from metarl.core import InnerStepSize, TaskBatch
from metarl.loop import progress_bar


def adaptation_curve(
    algorithm: MetaAlgorithm,
    model: nn.Module,
    batch: TaskBatch,
    problem: Problem,
    steps: int,
    step_sizes: StepSizes | None = None,
    chunk_size: int = 1000,
    progress: bool = False,
) -> Tensor:
    """Per-task query score after each of ``0..steps`` test-time adaptation steps.

    Every task starts from the model's parameters and adapts on its own support set, as the
    algorithm does at test time (:meth:`~metarl.algorithms.MetaAlgorithm.adapt_steps`); the
    model is not modified.

    Args:
        algorithm: how to adapt.
        model: the network (its parameters are θ).
        batch: test tasks: ``support`` is adapted on, ``query`` is scored.
        problem: the loss and the score (:attr:`Problem.score`, else the loss).
        steps: number of steps S.
        step_sizes: the test-time step size; None: the algorithm's own.
        chunk_size: tasks adapted together (bounds memory).
        progress: a progress bar over the chunks.

    Returns:
        ``(steps + 1, n_tasks)``: row s is the query score after s steps.
    """
    rows: list[Tensor] = []
    starts = range(0, batch.n_tasks, chunk_size)
    for start in progress_bar(starts, desc="evaluate", unit="chunk", disable=not progress):
        chunk = batch.tasks(start, start + chunk_size)
        scores = []
        for params in algorithm.adapt_steps(model, chunk, problem, steps, step_sizes):
            with torch.no_grad():
                predictions = problem.query_predictions(model, params, chunk)
                scores.append(problem.query_score(predictions, chunk))
        rows.append(torch.stack(scores))
    return torch.cat(rows, dim=1)


def step_size_used(config: Any, algorithm: MetaAlgorithm) -> float | list[float] | str:
    """The test-time step size as the report states it: ``eval_lr`` when given, else the
    algorithm's own (a fixed ``inner_lr``, or a summary of the meta-learned values)."""
    if config.eval_lr is not None:
        return config.eval_lr
    # Only the step sizes: a head generator's or per-step BatchNorm's tensors are not α.
    learned = [p.detach().reshape(-1) for m in algorithm.modules()
               if isinstance(m, InnerStepSize) for p in m.parameters()]  # fmt: skip
    if not learned:
        return config.inner_lr
    values = torch.cat(learned)
    # MAML++, LEOPARD and Meta-SGD learn α whatever learn_inner_lr says: name it only when set.
    granularity = "" if config.learn_inner_lr == "fixed" else f" ({config.learn_inner_lr})"
    return (
        f"meta-learned{granularity}: mean {float(values.mean()):.4g}, "
        f"range [{float(values.min()):.4g}, {float(values.max()):.4g}]"
    )
