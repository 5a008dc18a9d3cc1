"""The gradient alignment of a task batch at a model's parameters (``align/*`` metrics of
training, and ``metarl analyze``): :mod:`metarl.core.alignment` on a :class:`Problem`."""

from __future__ import annotations

from torch import Tensor, nn

from metarl.algorithms.base import Problem
from metarl.core import TaskBatch, get_params
from metarl.core.alignment import GradientAlignment, gradient_alignment, per_task_gradients
from metarl.core.functional import Params


def task_alignment(
    model: nn.Module, problem: Problem, batch: TaskBatch, params: Params | None = None
) -> GradientAlignment:
    """Support and query gradients of every task of ``batch`` at ``params`` (default: the
    model's own), and their alignment."""
    params = get_params(model) if params is None else params
    n = batch.n_tasks
    support = per_task_gradients(problem.support_loss(model, batch), params, n)

    def query_losses(p: Params) -> Tensor:
        return problem.losses(problem.query_predictions(model, p, batch), batch.query_y)

    query = per_task_gradients(query_losses, params, n)
    return gradient_alignment(support, query)


def alignment_metrics(alignment: GradientAlignment) -> dict[str, float]:
    """The ``align/*`` keys of ``metrics.jsonl``."""
    return {
        "align/same_task_cosine": alignment.same_task_cosine,
        "align/across_task_cosine": alignment.across_task_cosine,
        "align/same_task_inner": alignment.same_task_inner,
        "align/across_task_inner": alignment.across_task_inner,
    }
