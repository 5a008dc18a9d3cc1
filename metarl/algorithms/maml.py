"""MAML (Finn, Abbeel & Levine, ICML 2017) for supervised tasks, with its meta-gradient modes.

Inner loop, every task at once: ``θ'ᵢ = θ − α ∇L_support,i(θ)``, ``inner_steps`` times.
Outer objective: ``mean_i L_query,i(θ'ᵢ)``, differentiated through the inner loop as ``mode``
says (:mod:`metarl.core.adapt`): exactly (``second_order``), as first-order MAML
(``first_order``, Sec. 5.2 of the paper), or with finite-difference Hessian-vector products.

The step size α is an :class:`~metarl.core.InnerStepSize`: fixed (the paper), or meta-learned
with θ — one α (``global``), one per parameter tensor (``tensor``, as MAML++'s LSLR without its
per-step values) or one per parameter element (``element``, Meta-SGD's α).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms.base import MetaAlgorithm, MetaLoss, Problem, StepSizes
from metarl.core import (
    InnerStepSize,
    MetaGradientMode,
    Params,
    TaskBatch,
    adapt,
    expand_to_tasks,
    get_params,
    inner_step,
)
from metarl.core.step_size import as_step_size

LEARNABLE_STEP_SIZES = ("fixed", "global", "tensor", "element")
"""Values of ``learn_inner_lr``: a fixed α (the paper), or meta-learned at that granularity."""


class MAML(MetaAlgorithm):
    """MAML with a fixed or meta-learned inner step size.

    Args:
        step_size: α of the inner steps (its learnable tensors are this module's parameters).
        inner_steps: inner gradient steps during meta-training.
        mode: ``second_order``, ``first_order`` or ``finite_difference``.
        fd_epsilon: perturbation of the finite-difference mode.
    """

    def __init__(
        self,
        step_size: InnerStepSize,
        inner_steps: int = 1,
        mode: MetaGradientMode = "second_order",
        fd_epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        self.step_size = step_size
        self.inner_steps, self.mode, self.fd_epsilon = inner_steps, mode, fd_epsilon

    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        del iteration  # MAML's objective is the same at every iteration
        support_losses: list[Tensor] = []  # recorded on the way, for the log
        support_loss = problem.support_loss(model, batch)

        def recorded_support_loss(params: Params) -> Tensor:
            losses = support_loss(params)
            support_losses.append(losses.detach())
            return losses

        # --- inner loop: adapt θ to every task's support set, all tasks at once ---------------
        theta = expand_to_tasks(get_params(model), batch.n_tasks)
        adapted = adapt(
            recorded_support_loss, theta, self.step_size, self.inner_steps, self.mode,
            self.fd_epsilon,
        )  # fmt: skip

        # --- outer loss at the adapted parameters, mean over tasks ----------------------------
        predictions = problem.query_predictions(model, adapted, batch)
        loss = problem.task_losses(predictions, batch.query_y).mean()
        metrics = {"meta/query_loss": loss.detach()}
        if support_losses:
            metrics["inner/support_loss_pre"] = support_losses[0].mean()
        if problem.score is not None:
            with torch.no_grad():
                metrics[f"meta/{problem.score_name}"] = problem.score(
                    predictions, batch.query_y
                ).mean()
        return MetaLoss(loss, metrics)

    def adapt_steps(
        self,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        steps: int,
        step_sizes: StepSizes | None = None,
    ) -> Iterator[Params]:
        """Plain gradient steps from θ on each support set (first order: nothing is learned)."""
        alpha = self.step_size if step_sizes is None else as_step_size(step_sizes)
        theta = {name: p.detach() for name, p in get_params(model).items()}
        params = expand_to_tasks(theta, batch.n_tasks)
        support_loss = problem.support_loss(model, batch)
        for step in range(steps + 1):
            yield params
            if step == steps:
                return
            with torch.enable_grad():
                adapted = inner_step(
                    support_loss, params, alpha, step, mode="first_order", check_finite=False
                )
            params = {name: p.detach() for name, p in adapted.items()}


def from_config(config: Any, model: nn.Module) -> MAML:
    """MAML as a supervised config describes it (``inner_lr``, ``inner_steps``,
    ``meta_gradient``, ``fd_epsilon``, ``learn_inner_lr``)."""
    granularity = config.learn_inner_lr
    if granularity == "fixed":
        step_size = InnerStepSize(config.inner_lr)
    else:
        params = {name: p.detach() for name, p in get_params(model).items()}
        step_size = InnerStepSize(config.inner_lr, params, learnable=True, granularity=granularity)
    return MAML(step_size, config.inner_steps, config.meta_gradient, config.fd_epsilon)
