"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

Each task adapts by ``inner_steps`` plain gradient steps on its own data, ``φᵢ``; the outer
update moves θ toward the adapted weights, ``θ ← θ + ε (mean_i φᵢ − θ)`` (the batched version;
``meta_batch_size: 1`` is the serial one). No query set is used for training: the trainer's
optimiser receives ``θ − mean_i φᵢ`` as the gradient, so ``meta_optimizer: sgd`` with
``meta_lr: ε`` is the paper's interpolation (it anneals ε linearly: ``meta_lr_schedule:
linear``), and Adam on that direction is the common variant. The query loss at φ is logged.

The inner loop is plain gradient steps, or Adam with β1 = 0 (``inner_optimizer="adam"``), the
paper's choice for its few-shot experiments (Nichol et al. 2018, §6: momentum hurt; App. A:
step 0.001): see :func:`adam_steps`.
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
from metarl.core.step_size import as_step_size

LossFn = Callable[[Params], Tensor]


def adam_steps(
    loss_fn: LossFn,
    params: Params,
    step_size: float | InnerStepSize,
    steps: int,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> Iterator[Params]:
    """Adam with β1 = 0 on every task at once, yielding φ₀ = ``params``, φ₁, …, φ_steps (detached).

    With β1 = 0 Adam's first moment is the gradient itself, so for each task and element

        v_t = β2 v_{t−1} + (1 − β2) g_t²,    φ_t = φ_{t−1} − α g_t / (√(v_t / (1 − β2^t)) + ε),

    (Kingma & Ba 2015, Alg. 1 with β1 = 0; Reptile's inner optimiser, Nichol et al. 2018). Each
    task's moments start at zero, as its φ starts at θ. ``loss_fn`` maps task-batched
    parameters to ``(n_tasks,)`` losses; their sum's gradient is every task's own gradient.
    """
    alpha = as_step_size(step_size)
    moments = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in range(steps + 1):
        yield params
        if t == steps:
            return
        with torch.enable_grad():
            live = {n: p.detach().requires_grad_() for n, p in params.items()}
            grads = torch.autograd.grad(loss_fn(live).sum(), list(live.values()))
        correction = 1.0 - beta2 ** (t + 1)
        stepped = {}
        for (n, p), g in zip(live.items(), grads):
            moments[n] = beta2 * moments[n] + (1.0 - beta2) * g * g
            scale = (moments[n] / correction).sqrt() + eps
            stepped[n] = (p - alpha(t, n) * g / scale).detach()
        params = stepped


class Reptile(MetaAlgorithm):
    """Reptile with plain gradient steps of size ``step_size`` in the inner loop, or Adam.

    Args:
        step_size: α of the inner steps (fixed).
        inner_steps: k, the inner steps per task.
        inner_optimizer: ``sgd`` (plain steps) or ``adam`` (β1 = 0: :func:`adam_steps`).
    """

    def __init__(
        self, step_size: InnerStepSize, inner_steps: int, inner_optimizer: str = "sgd"
    ) -> None:
        super().__init__()
        require_inner_steps(inner_steps, "Reptile")
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be sgd or adam, got {inner_optimizer!r}")
        self.step_size, self.inner_steps = step_size, inner_steps
        self.inner_optimizer = inner_optimizer

    def _steps(
        self, loss_fn: LossFn, start: Params, step_size: Any, steps: int
    ) -> Iterator[Params]:
        """The inner optimiser's iterates from ``start`` (task dimension first), detached."""
        if self.inner_optimizer == "adam":
            return adam_steps(loss_fn, start, step_size, steps)
        return gradient_steps(loss_fn, {}, start, step_size, steps)

    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        theta = get_params(model)
        support_loss = problem.support_loss(model, batch)
        start = expand_to_tasks({n: p.detach() for n, p in theta.items()}, batch.n_tasks)
        with torch.no_grad():
            before = support_loss(start).mean()
        phi = last(self._steps(support_loss, start, self.step_size, self.inner_steps))
        # θ − mean φ is the gradient of this surrogate; its value is not a loss of anything.
        direction = {n: theta[n].detach() - phi[n].mean(dim=0) for n in theta}
        surrogate = sum((direction[n] * theta[n]).sum() for n in theta)
        with torch.no_grad():
            predictions = problem.query_predictions(model, phi, batch)
            metrics = {
                "meta/query_loss": problem.losses(predictions, batch.query_y).mean(),
                "inner/support_loss_pre": before,
                # a mean over tasks (not the norm of the mean step), so chunks log the same
                "inner/distance": torch.sqrt(
                    sum((theta[n].detach() - phi[n]).pow(2).flatten(1).sum(1) for n in theta)
                ).mean(),
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
        """The inner optimiser's steps from θ on each support set, as in training."""
        theta = {n: p.detach() for n, p in get_params(model).items()}
        alpha = self.step_size if step_sizes is None else step_sizes
        start = expand_to_tasks(theta, batch.n_tasks)
        yield from self._steps(problem.support_loss(model, batch), start, alpha, steps)


LABEL = "Reptile"
"""How tables and plots name the algorithm."""


OWN_SETTINGS = OwnSettings(
    meta_gradient="θ − φ, first order by construction",
    learn_inner_lr="a fixed inner_lr",
    needs_inner_steps=True,
)
"""The shared config settings this algorithm decides itself (:class:`OwnSettings`)."""


def from_config(config: Any, model: nn.Module) -> Reptile:
    """Reptile with a config's ``inner_lr``, ``inner_steps`` and ``reptile_inner_optimizer``."""
    return Reptile(
        InnerStepSize(config.inner_lr), config.inner_steps, config.reptile_inner_optimizer
    )
