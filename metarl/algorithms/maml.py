"""MAML (Finn, Abbeel & Levine, ICML 2017) for supervised tasks, and the inner loop its family
shares.

Inner loop, every task at once: ``θ'ᵢ = θ − α ∇L_support,i(θ)``, ``inner_steps`` times.
Outer objective: ``mean_i L_query,i(θ'ᵢ)``, differentiated through the inner loop as ``mode``
says (:mod:`metarl.core.adapt`): exactly (``second_order``), as first-order MAML
(``first_order``, Sec. 5.2 of the paper), or with finite-difference Hessian-vector products.

The step size α is an :class:`~metarl.core.InnerStepSize`: fixed (the paper), or meta-learned
with θ — one α (``global``), one per parameter tensor (``tensor``) or one per parameter element
(``element``, Meta-SGD's α); one per inner step when its schedule has several entries.

Five optional pieces make the variants of the family, each a module of this package:

* ``adapted`` — which parameters the inner loop changes (ANIL: the head only);
* ``head`` — a task's initial head computed from its support set (ProtoMAML's prototypes,
  LEOPARD's generator); the meta-gradient flows through it;
* ``step_weights`` — MAML++'s multi-step loss: the query loss after every inner step, weighted;
* ``mode_at`` — MAML++'s derivative-order annealing: the mode by iteration;
* ``per_step`` — parameters the inner loop holds fixed but that differ by inner step, all
  meta-learned (MAML++'s per-step BatchNorm weights and biases).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from metarl.algorithms.base import MetaAlgorithm, MetaLoss, Problem, StepSizes
from metarl.core import (
    InnerStepSize,
    MetaGradientMode,
    Params,
    TaskBatch,
    expand_to_tasks,
    get_params,
    inner_step,
)
from metarl.core.step_size import as_step_size

LEARNABLE_STEP_SIZES = ("fixed", "global", "tensor", "element")
"""Values of ``learn_inner_lr``: a fixed α (the paper), or meta-learned at that granularity."""


class HeadInitializer(Protocol):
    """``(model, params, batch, problem) -> params`` with the head's entries replaced by a
    task-specific initial head computed from each task's support set (task dimension first)."""

    def __call__(
        self, model: nn.Module, params: Params, batch: TaskBatch, problem: Problem
    ) -> Params: ...


class PerStep(Protocol):
    """``(step, n_tasks) -> params``: the entries that inner step ``step`` (0-based) uses in
    place of the model's, task dimension first; :attr:`names` lists them (never adapted)."""

    names: frozenset[str]

    def __call__(self, step: int, n_tasks: int) -> Params: ...


class MAML(MetaAlgorithm):
    """MAML with a fixed or meta-learned inner step size, and the family's optional pieces.

    Args:
        step_size: α of the inner steps (its learnable tensors are this module's parameters).
        inner_steps: inner gradient steps during meta-training.
        mode: ``second_order``, ``first_order`` or ``finite_difference``.
        fd_epsilon: perturbation of the finite-difference mode.
        adapted: ``name -> bool``, the parameters the inner loop changes; None: all of them.
        head: a task-specific initial head (an ``nn.Module`` one is meta-learned too).
        step_weights: ``iteration -> weights`` of the query loss after inner steps ``1..K``;
            None: only after the last step (MAML).
        mode_at: ``iteration -> mode``; None: ``mode`` throughout.
        per_step: per-step parameters (an ``nn.Module`` one is meta-learned too). Step ``k``'s
            support loss and the query loss after step ``k`` use ``per_step(k)``; at test time
            steps beyond the trained ones use the last.
    """

    def __init__(
        self,
        step_size: InnerStepSize,
        inner_steps: int = 1,
        mode: MetaGradientMode = "second_order",
        fd_epsilon: float = 1e-2,
        adapted: Callable[[str], bool] | None = None,
        head: HeadInitializer | None = None,
        step_weights: Callable[[int], Sequence[float]] | None = None,
        mode_at: Callable[[int], MetaGradientMode] | None = None,
        per_step: PerStep | None = None,
    ) -> None:
        super().__init__()
        self.step_size = step_size
        self.inner_steps, self.mode, self.fd_epsilon = inner_steps, mode, fd_epsilon
        self.adapted, self.head = adapted, head
        self.step_weights, self.mode_at = step_weights, mode_at
        self.per_step = per_step

    def _adapts(self, name: str) -> bool:
        per_step = self.per_step is not None and name in self.per_step.names
        return not per_step and (self.adapted is None or self.adapted(name))

    def _split(self, params: Params) -> tuple[Params, Params]:
        """(the parameters the inner loop holds fixed, those it adapts)."""
        fixed = {n: p for n, p in params.items() if not self._adapts(n)}
        return fixed, {n: p for n, p in params.items() if self._adapts(n)}

    def _fixed_at(self, fixed: Params, n_tasks: int) -> Callable[[int], Params]:
        """``step -> `` the fixed parameters inner step ``step`` uses."""
        if self.per_step is None:
            return lambda step: fixed
        last = self.inner_steps - 1
        per_step = self.per_step
        return lambda step: {**fixed, **per_step(min(step, last), n_tasks)}

    def _start(self, model: nn.Module, batch: TaskBatch, problem: Problem, detach: bool) -> Params:
        """θ with a task dimension, with the task's initial head if there is one."""
        theta = get_params(model)
        if detach:
            theta = {name: p.detach() for name, p in theta.items()}
        params = expand_to_tasks(theta, batch.n_tasks)
        if self.head is not None:
            params = self.head(model, params, batch, problem)
        return params

    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        mode = self.mode if self.mode_at is None else self.mode_at(iteration)
        weights = None if self.step_weights is None else list(self.step_weights(iteration))
        support_loss = problem.support_loss(model, batch)
        support_losses: list[Tensor] = []  # recorded on the way, for the log
        fixed, params = self._split(self._start(model, batch, problem, detach=False))
        fixed_at = self._fixed_at(fixed, batch.n_tasks)

        def recorded_support_loss(step: int) -> Callable[[Params], Tensor]:
            def loss(adapted: Params) -> Tensor:
                losses = support_loss({**fixed_at(step), **adapted})
                support_losses.append(losses.detach())
                return losses

            return loss

        def query_loss(adapted: Params, step: int) -> tuple[Tensor, Tensor]:
            predictions = problem.query_predictions(model, {**fixed_at(step), **adapted}, batch)
            return problem.losses(predictions, batch.query_y).mean(), predictions

        # --- inner loop: adapt θ to every task's support set, all tasks at once ---------------
        # (with MAML++'s multi-step loss, the query loss after each earlier step is weighted in)
        earlier: list[Tensor] = []
        for k in range(self.inner_steps):
            params = inner_step(
                recorded_support_loss(k), params, self.step_size, k, mode, self.fd_epsilon
            )
            if weights is not None and k < self.inner_steps - 1 and weights[k] > 0:
                earlier.append(weights[k] * query_loss(params, k)[0])

        # --- outer loss at the adapted parameters, mean over tasks ----------------------------
        last, predictions = query_loss(params, self.inner_steps - 1)
        loss = last if weights is None else sum(earlier, weights[-1] * last)
        metrics = {"meta/query_loss": last.detach()}
        if support_losses:
            metrics["inner/support_loss_pre"] = support_losses[0].mean()
        metrics.update(problem.score_metrics(predictions, batch))
        return MetaLoss(loss, metrics)

    def adapt_steps(
        self,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        steps: int,
        step_sizes: StepSizes | None = None,
    ) -> Iterator[Params]:
        """Plain gradient steps from θ (with the task's initial head, if any) on each support
        set, of the adapted parameters only (first order: nothing is learned)."""
        alpha = self.step_size if step_sizes is None else as_step_size(step_sizes)
        with torch.enable_grad():  # the initial head may need the support set's features
            start = self._start(model, batch, problem, detach=True)
        fixed, params = self._split({name: p.detach() for name, p in start.items()})
        fixed_at = self._fixed_at(fixed, batch.n_tasks)

        def detached_fixed_at(step: int) -> Params:
            return {name: p.detach() for name, p in fixed_at(step).items()}

        loss_fn = problem.support_loss(model, batch)
        yield from gradient_steps(loss_fn, detached_fixed_at, params, alpha, steps)


def gradient_steps(
    loss_fn: Callable[[Params], Tensor],
    fixed: Params | Callable[[int], Params],
    params: Params,
    step_size: StepSizes,
    steps: int,
) -> Iterator[Params]:
    """Test-time adaptation shared by the family: ``steps`` plain gradient steps on ``params``
    (``fixed`` held), yielding ``{**fixed, **params}`` before and after every step, detached.

    Args:
        loss_fn: ``(all parameters, task dimension first) -> (n_tasks,)`` losses to descend.
        fixed: parameters that do not change; or ``step -> `` those of inner step ``step``
            (the parameters yielded after ``s`` steps hold step ``max(s − 1, 0)``'s, the ones
            the query loss after that step saw in training).
        params: the starting point of those that do.
        step_size: α, a per-step schedule or an :class:`~metarl.core.InnerStepSize`.
        steps: gradient steps.
    """
    alpha = as_step_size(step_size)
    fixed_at = fixed if callable(fixed) else (lambda step: fixed)
    for step in range(steps + 1):
        yield {**fixed_at(max(step - 1, 0)), **params}
        if step == steps:
            return
        held = fixed_at(step)
        with torch.enable_grad():
            adapted = inner_step(
                lambda p: loss_fn({**held, **p}), params, alpha, step, mode="first_order",
                check_finite=False,
            )  # fmt: skip
        params = {name: p.detach() for name, p in adapted.items()}


def last(steps: Iterator[Params]) -> Params:
    """The final parameters of :func:`gradient_steps`, holding one step's at a time (unpacking
    ``*_, phi`` would keep every step's copy of the parameters alive: memory growing with the
    inner steps, as the memory-family benchmark showed)."""
    return deque(steps, maxlen=1)[0]


def step_size_from_config(config: Any, model: nn.Module, granularity: str | None = None,
                          per_step: bool = False) -> InnerStepSize:  # fmt: skip
    """The inner step size a config describes: ``inner_lr``, fixed or meta-learned at
    ``granularity`` (default ``learn_inner_lr``), one per inner step if ``per_step``."""
    granularity = config.learn_inner_lr if granularity is None else granularity
    init = [config.inner_lr] * config.inner_steps if per_step else config.inner_lr
    if granularity == "fixed":
        return InnerStepSize(init)
    params = {name: p.detach() for name, p in get_params(model).items()}
    return InnerStepSize(init, params, learnable=True, granularity=granularity)  # type: ignore[arg-type]


LABEL = "MAML"
"""How tables and plots name the algorithm."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """MAML as a supervised config describes it (``inner_lr``, ``inner_steps``,
    ``meta_gradient``, ``fd_epsilon``, ``learn_inner_lr``)."""
    return MAML(
        step_size_from_config(config, model), config.inner_steps, config.meta_gradient,
        config.fd_epsilon,
    )  # fmt: skip
