"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

Each task adapts by ``inner_steps`` plain gradient steps on its own data, ``φᵢ``; the outer
update moves θ toward the adapted weights, ``θ ← θ + ε (mean_i φᵢ − θ)`` (the batched version;
``meta_batch_size: 1`` is the serial one). No query set is used for training: the trainer's
optimiser receives ``θ − mean_i φᵢ`` as the gradient, so ``meta_optimizer: sgd`` with
``meta_lr: ε`` is the paper's interpolation (it anneals ε linearly: ``meta_lr_schedule:
linear``), and Adam on that direction is the common variant. The query loss at φ is logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from metarl.algorithms.base import MetaAlgorithm, MetaLoss, Problem, StepSizes
from metarl.algorithms.maml import gradient_steps, last
from metarl.core import InnerStepSize, Params, TaskBatch, expand_to_tasks, get_params


class Reptile(MetaAlgorithm):
    """Reptile with plain gradient steps of size ``step_size`` in the inner loop.

    Args:
        step_size: α of the inner steps (fixed).
        inner_steps: k, the inner steps per task.
    """

    def __init__(self, step_size: InnerStepSize, inner_steps: int) -> None:
        super().__init__()
        if inner_steps < 1:
            raise ValueError(f"Reptile needs at least one inner step, got {inner_steps}")
        self.step_size, self.inner_steps = step_size, inner_steps

    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        theta = get_params(model)
        support_loss = problem.support_loss(model, batch)
        start = expand_to_tasks({n: p.detach() for n, p in theta.items()}, batch.n_tasks)
        with torch.no_grad():
            before = support_loss(start).mean()
        phi = last(gradient_steps(support_loss, {}, start, self.step_size, self.inner_steps))
        # θ − mean φ is the gradient of this surrogate; its value is not a loss of anything.
        direction = {n: theta[n].detach() - phi[n].mean(dim=0) for n in theta}
        surrogate = sum((direction[n] * theta[n]).sum() for n in theta)
        with torch.no_grad():
            predictions = problem.query_predictions(model, phi, batch)
            metrics = {
                "meta/query_loss": problem.task_losses(predictions, batch.query_y).mean(),
                "inner/support_loss_pre": before,
                # a mean over tasks (not the norm of the mean step), so chunks log the same
                "inner/distance": torch.sqrt(
                    sum((theta[n].detach() - phi[n]).pow(2).flatten(1).sum(1) for n in theta)
                ).mean(),
            }
            if problem.score is not None:
                score = problem.score(predictions, batch.query_y).mean()
                metrics[f"meta/{problem.score_name}"] = score
        return MetaLoss(surrogate, metrics)  # type: ignore[arg-type]

    def adapt_steps(
        self,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        steps: int,
        step_sizes: StepSizes | None = None,
    ) -> Iterator[Params]:
        """Plain gradient steps from θ on each support set, as in training."""
        theta = {n: p.detach() for n, p in get_params(model).items()}
        alpha = self.step_size if step_sizes is None else step_sizes
        start = expand_to_tasks(theta, batch.n_tasks)
        yield from gradient_steps(problem.support_loss(model, batch), {}, start, alpha, steps)


def from_config(config: Any, model: nn.Module) -> Reptile:
    """Reptile with a config's ``inner_lr`` and ``inner_steps``."""
    return Reptile(InnerStepSize(config.inner_lr), max(config.inner_steps, 1))
