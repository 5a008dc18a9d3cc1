"""iMAML, implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019).

The inner loop solves a proximal problem per task, ``φᵢ ≈ argmin_φ L_support,i(φ) + λ/2 ‖φ − θ‖²``
(``inner_steps`` gradient steps from θ, without a graph), and the meta-gradient is implicit: at
the solution, ``dφᵢ/dθ = (I + Hᵢ/λ)^{-1}`` with ``Hᵢ`` the Hessian of the support loss at φᵢ, so

    ∇_θ mean_i L_query,i(φᵢ) = mean_i (I + Hᵢ/λ)^{-1} ∇L_query,i(φᵢ),

solved for every task at once by conjugate gradient on Hessian-vector products
(:func:`~metarl.core.conjugate_gradient.batched_conjugate_gradient`). Memory does not grow with
the number of inner steps. The relative CG residual is logged as ``inner/cg_residual``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms.base import (
    MetaAlgorithm,
    MetaLoss,
    OwnSettings,
    Problem,
    StepSizes,
    require_inner_steps,
)
from metarl.algorithms.maml import gradient_steps, last
from metarl.core import InnerStepSize, Params, TaskBatch, expand_to_tasks, get_params
from metarl.core.conjugate_gradient import batched_conjugate_gradient


def proximal_loss(
    loss_fn: Callable[[Params], Tensor], anchor: Params, lam: float
) -> Callable[[Params], Tensor]:
    """``φ -> loss_fn(φ) + λ/2 ‖φ − anchor‖²`` per task (``(n_tasks,)``)."""

    def loss(params: Params) -> Tensor:
        distance = sum(
            (params[n] - anchor[n]).pow(2).reshape(params[n].shape[0], -1).sum(dim=1)
            for n in params
        )
        return loss_fn(params) + 0.5 * lam * distance

    return loss


def safeguarded_steps(
    loss_fn: Callable[[Params], Tensor], params: Params, step_size: float, steps: int,
    halvings: int = 10,
) -> Iterator[Params]:  # fmt: skip
    """Gradient descent on each task's loss with a per-task guard against divergence: a step
    that does not lower its task's loss (or is not finite) is retried at half the step size, up
    to ``halvings`` times; a task that no halving improves stays where it is. Where plain steps
    of ``step_size`` keep lowering the loss, this is plain gradient descent.

    Yields the task-batched parameters (detached) before and after every step, as
    :func:`~metarl.algorithms.maml.gradient_steps`.
    """
    n_tasks = next(iter(params.values())).shape[0]
    for step in range(steps + 1):
        yield params
        if step == steps:
            return
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            losses = loss_fn(leaves)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        current = losses.detach()
        scale = torch.full((n_tasks,), float(step_size), dtype=current.dtype, device=current.device)
        accepted = torch.zeros(n_tasks, dtype=torch.bool, device=current.device)
        moved = dict(params)
        for _ in range(halvings + 1):
            candidate = {n: params[n] - scale.view(-1, *[1] * (g.dim() - 1)) * g
                         for n, g in zip(params, grads)}  # fmt: skip
            with torch.no_grad():
                trial = loss_fn(candidate)
            better = torch.isfinite(trial) & (trial <= current)
            take = better & ~accepted
            for n in params:
                moved[n] = torch.where(take.view(-1, *[1] * (params[n].dim() - 1)),
                                       candidate[n], moved[n])  # fmt: skip
            accepted |= better
            if bool(accepted.all()):
                break
            scale = torch.where(accepted, scale, scale / 2)
        params = {n: p.detach() for n, p in moved.items()}


def _flat(params: Params, names: list[str]) -> Tensor:
    """``(n_tasks, P)``: each task's parameters in one row."""
    return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in names], dim=1)


def _unflat(flat: Tensor, like: Params, names: list[str]) -> Params:
    out, start = {}, 0
    for n in names:
        size = like[n][0].numel()
        out[n] = flat[:, start : start + size].reshape(like[n].shape)
        start += size
    return out


class IMAML(MetaAlgorithm):
    """iMAML with gradient descent on the proximal problem and CG for the implicit gradient.

    Args:
        step_size: α of the inner gradient steps.
        inner_steps: steps on the proximal problem.
        lam: λ, the proximal regularisation strength.
        cg_steps: conjugate-gradient iterations (Hessian-vector products).
        safeguard: halve a task's step until its proximal loss decreases
            (:func:`safeguarded_steps`) instead of plain gradient steps (the paper's).
    """

    def __init__(
        self, step_size: InnerStepSize, inner_steps: int, lam: float, cg_steps: int,
        safeguard: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        if not lam > 0:
            raise ValueError(f"iMAML's λ must be positive, got {lam}")
        require_inner_steps(inner_steps, "iMAML")  # φ = θ solves no proximal problem
        self.step_size, self.inner_steps, self.lam, self.cg_steps = (
            step_size, inner_steps, lam, cg_steps
        )  # fmt: skip
        self.safeguard = safeguard

    def _solve(self, loss: Callable[[Params], Tensor], theta: Params, alpha: StepSizes,
               steps: int) -> Iterator[Params]:  # fmt: skip
        """The inner solver: plain or safeguarded gradient descent from θ."""
        if self.safeguard:
            if isinstance(alpha, InnerStepSize):
                alpha = alpha.schedule[0]
            elif not isinstance(alpha, (int, float)):
                alpha = list(alpha)[0]
            return safeguarded_steps(loss, theta, float(alpha), steps)
        return gradient_steps(loss, {}, theta, alpha, steps)

    def adapted_parameters(self, model: nn.Module, batch: TaskBatch, problem: Problem) -> Params:
        """φ: the approximate solutions of the proximal problems (task dimension first)."""
        theta = expand_to_tasks(
            {n: p.detach() for n, p in get_params(model).items()}, batch.n_tasks
        )
        loss = proximal_loss(problem.support_loss(model, batch), theta, self.lam)
        return last(self._solve(loss, theta, self.step_size, self.inner_steps))

    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        theta = get_params(model)
        names = list(theta)
        phi = self.adapted_parameters(model, batch, problem)

        # --- ∇L_query at φ, per task (the right-hand sides) ------------------------------------
        phi = {n: p.requires_grad_(True) for n, p in phi.items()}
        predictions = problem.query_predictions(model, phi, batch)
        query_losses = problem.losses(predictions, batch.query_y)
        grads = torch.autograd.grad(query_losses.sum(), list(phi.values()))
        query_grad = _flat(dict(zip(names, grads)), names)

        # --- (I + H/λ) x = ∇L_query by CG on the support loss's Hessian-vector products ----
        support = problem.support_loss(model, batch)(phi).sum()
        support_grad = torch.autograd.grad(support, list(phi.values()), create_graph=True)

        def matvec(v: Tensor) -> Tensor:
            vectors = _unflat(v, phi, names)
            dot = sum((g * vectors[n]).sum() for n, g in zip(names, support_grad))
            hvp = torch.autograd.grad(dot, list(phi.values()), retain_graph=True)
            return v + _flat(dict(zip(names, hvp)), names).detach() / self.lam

        solution, residual_sq = batched_conjugate_gradient(matvec, query_grad, self.cg_steps)
        mean = solution.mean(dim=0, keepdim=True)  # the meta-gradient, mean over tasks
        meta_gradient = _unflat(mean, {n: theta[n][None] for n in names}, names)

        # The surrogate's gradient with respect to θ is the implicit meta-gradient.
        surrogate = sum((meta_gradient[n][0].detach() * theta[n]).sum() for n in names)
        relative = (residual_sq.sqrt() / query_grad.norm(dim=1).clamp(min=1e-30)).mean()
        with torch.no_grad():
            metrics = {
                "meta/query_loss": query_losses.mean().detach(),
                "inner/cg_residual": relative,
            }
            metrics.update(problem.score_metrics(predictions, batch))
        return MetaLoss(surrogate, metrics)  # type: ignore[arg-type]

    def adapt_steps(
        self,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        steps: int,
        step_sizes: StepSizes | None = None,
    ) -> Iterator[Params]:
        """Gradient steps on the proximal problem from θ, as in training."""
        theta = expand_to_tasks(
            {n: p.detach() for n, p in get_params(model).items()}, batch.n_tasks
        )
        loss = proximal_loss(problem.support_loss(model, batch), theta, self.lam)
        alpha = self.step_size if step_sizes is None else step_sizes
        yield from self._solve(loss, theta, alpha, steps)


LABEL = "iMAML"
"""How tables and plots name the algorithm."""


OWN_SETTINGS = OwnSettings(
    meta_gradient="the implicit gradient, by conjugate gradient",
    learn_inner_lr="a fixed inner_lr",
    needs_inner_steps=True,
)
"""The shared config settings this algorithm decides itself (:class:`OwnSettings`)."""


def from_config(config: Any, model: nn.Module) -> IMAML:
    """iMAML with a config's ``inner_lr``, ``inner_steps``, ``imaml_lambda``, ``imaml_cg_steps``,
    ``imaml_solver``."""
    return IMAML(
        InnerStepSize(config.inner_lr), config.inner_steps, config.imaml_lambda,
        config.imaml_cg_steps, safeguard=config.imaml_solver == "safeguarded",
    )  # fmt: skip
