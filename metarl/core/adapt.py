"""The MAML inner loop: θ' = θ − α ∇L_support(θ), repeated, differentiable in θ.

How the meta-gradient flows back through the inner loop is one option, ``mode``:

``"second_order"``
    Exact. The inner gradient is built with ``create_graph=True``, so backpropagating the query
    loss through θ' applies (I − α H) with the true Hessian H of the support loss.
``"first_order"``
    First-order MAML (Finn et al. 2017, Sec. 5.2): θ' is treated as θ plus a constant, so the
    meta-gradient is simply the query gradient at θ'.
``"finite_difference"``
    Without a second-order graph: the backward pass forms the Hessian-vector product by central
    differences of gradients, H v ≈ [∇L(θ + εv) − ∇L(θ − εv)] / 2ε, with ε = ``fd_epsilon`` /
    ‖v‖. Memory stays at first-order level; each backward costs two extra gradient evaluations.
    O(ε²) accurate where the loss is smooth (tanh: relative error ~1e-5 at ε = 1e-2 in float32);
    with ReLU, any sample whose unit switches within ±εv makes the difference a spike that no
    Hessian has, and no ε avoids it on every batch (docs/numerics.md).

Tasks are independent, so with a task batch (parameters with a leading task dimension, see
:mod:`metarl.core.functional`) the gradient of the *sum* of task losses with respect to the
batched parameters is every task's own gradient: one backward pass adapts all tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from metarl.core.functional import Params
from metarl.core.step_size import InnerStepSize, as_step_size

MetaGradientMode = Literal["second_order", "first_order", "finite_difference"]
META_GRADIENT_MODES: tuple[str, ...] = ("second_order", "first_order", "finite_difference")

LossFn = Callable[[Params], Tensor]
"""Maps parameters to task losses (any shape; their sum is differentiated)."""


def _gradients(
    loss_fn: LossFn, params: Params, create_graph: bool, check_finite: bool = True
) -> list[Tensor]:
    """∇ of ``loss_fn(params).sum()`` w.r.t. each tensor of ``params`` (zero if unused): the
    partial derivative in each, the others held fixed.

    Each tensor is differentiated through an alias of its own, so one computed from another (the
    heads of ProtoMAML and LEOPARD, made from the body's features on the support set) is a
    variable of the inner loop like any other: the body's inner gradient does not also flow back
    through the head's initialisation, and a first-order step leaves that history intact for the
    meta-gradient.
    """
    aliases = {name: p.view_as(p) for name, p in params.items()}
    tensors = list(aliases.values())
    loss = loss_fn(aliases).sum()
    if check_finite and not torch.isfinite(loss):
        raise FloatingPointError(f"the inner-loop (support) loss is not finite: {loss.item()}")
    grads = torch.autograd.grad(loss, tensors, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, grads)]


class _FiniteDifferenceGradient(torch.autograd.Function):
    """Forward: ∇L(θ) (no graph). Backward: v ↦ H v by central differences of ∇L."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, loss_fn: LossFn, names: list[str], epsilon: float, *tensors: Tensor
    ) -> tuple[Tensor, ...]:
        ctx.loss_fn, ctx.names, ctx.epsilon = loss_fn, names, epsilon
        ctx.save_for_backward(*tensors)
        # The differences must see the random numbers this gradient saw (Dropout's masks).
        ctx.devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
        ctx.rng = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in ctx.devices]
        with torch.enable_grad():
            leaves = {n: t.detach().requires_grad_(True) for n, t in zip(names, tensors)}
            return tuple(g.detach() for g in _gradients(loss_fn, leaves, create_graph=False))

    @staticmethod
    def backward(ctx: Any, *vectors: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        tensors = ctx.saved_tensors
        norm = torch.sqrt(sum((v.double() ** 2).sum() for v in vectors)).item()
        if norm == 0.0:
            return (None, None, None, *[torch.zeros_like(t) for t in tensors])
        eps = ctx.epsilon / norm  # a perturbation of size fd_epsilon whatever the scale of v

        def grad_at(sign: float) -> list[Tensor]:
            with torch.random.fork_rng(devices=ctx.devices), torch.enable_grad():
                torch.set_rng_state(ctx.rng[0])
                for device, state in zip(ctx.devices, ctx.rng[1]):
                    torch.cuda.set_rng_state(state, device)
                shifted = {
                    n: (t.detach() + sign * eps * v).requires_grad_(True)
                    for n, t, v in zip(ctx.names, tensors, vectors)
                }
                return _gradients(ctx.loss_fn, shifted, create_graph=False)

        plus, minus = grad_at(+1.0), grad_at(-1.0)
        hvp = [(gp - gm) / (2.0 * eps) for gp, gm in zip(plus, minus)]
        return (None, None, None, *hvp)


def inner_step(
    loss_fn: LossFn,
    params: Params,
    step_size: float | Sequence[float] | InnerStepSize,
    step: int = 0,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-2,
    check_finite: bool = True,
) -> Params:
    """One gradient step θ' = θ − α_step ∇ loss_fn(θ).

    Args:
        loss_fn: parameters -> support losses (for a task batch: one per task; they are summed).
        params: θ, with or without a leading task dimension.
        step_size: α (float, per-step schedule, or an :class:`InnerStepSize`).
        step: index of this inner step (selects α from a schedule).
        mode: how the meta-gradient flows through this step (see module docstring).
        fd_epsilon: perturbation size for ``mode="finite_difference"``.
        check_finite: raise ``FloatingPointError`` on a NaN/inf support loss (evaluation of a
            diverging step size turns it off and records the non-finite score instead).

    Returns:
        θ' as a new dict; ``params`` is not modified.
    """
    if mode not in META_GRADIENT_MODES:
        raise ValueError(f"mode must be one of {META_GRADIENT_MODES}, got {mode!r}")
    if not torch.is_grad_enabled():
        raise RuntimeError("MAML adaptation needs gradients: do not call it under torch.no_grad()")
    alpha = as_step_size(step_size)
    # A tensor that does not require grad (evaluation of a frozen model) still needs an inner
    # gradient: give it a fresh leaf. No meta-gradient could have reached it anyway.
    params = {
        n: p if p.requires_grad else p.detach().requires_grad_(True) for n, p in params.items()
    }
    names = list(params)
    if mode == "finite_difference":
        grads = list(_FiniteDifferenceGradient.apply(loss_fn, names, fd_epsilon, *params.values()))
    else:
        grads = _gradients(loss_fn, params, mode == "second_order", check_finite)
    adapted = {}
    for name, grad in zip(names, grads):
        lr = alpha(step, name)
        # A constant α fuses into one op (fewer autograd nodes: this runs inside the meta-graph).
        adapted[name] = (
            torch.sub(params[name], grad, alpha=lr)
            if isinstance(lr, float)
            else params[name] - lr * grad
        )
    return adapted


def adapt(
    loss_fn: LossFn,
    params: Params,
    step_size: float | Sequence[float] | InnerStepSize,
    steps: int = 1,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-2,
) -> Params:
    """``steps`` inner gradient steps on the same support loss (the supervised MAML inner loop).

    RL takes fresh episodes at every step, so it calls :func:`inner_step` once per step instead.
    See :func:`inner_step` for the arguments.

    Example, one weight ``w`` of a model ``w·x``, a support point and a query point, checked
    against the closed form::

        >>> import torch
        >>> from metarl.core import adapt
        >>> w = torch.tensor([1.0], requires_grad=True)
        >>> support = lambda p: ((p["w"] * 2.0 - 6.0) ** 2).sum()       # x = 2, y = 6
        >>> adapted = adapt(support, {"w": w}, step_size=0.1)
        >>> adapted["w"]          # w' = w − α·2x(wx − y) = 1 − 0.1·4·(−4)
        tensor([2.6000], grad_fn=<SubBackward0>)
        >>> query = ((adapted["w"] * 1.0 - 3.0) ** 2).sum()              # x = 1, y = 3
        >>> query.backward()      # MAML's meta-gradient: 2(w' − 3) · dw'/dw = −0.8 · (1 − 2α·4)
        >>> w.grad
        tensor([-0.1600])
        >>> w.grad = None
        >>> fo = adapt(support, {"w": w}, 0.1, mode="first_order")
        >>> ((fo["w"] - 3.0) ** 2).sum().backward()   # first order drops dw'/dw's Hessian term
        >>> w.grad
        tensor([-0.8000])
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    alpha = as_step_size(step_size)
    for k in range(steps):
        params = inner_step(loss_fn, params, alpha, k, mode, fd_epsilon)
    return params
