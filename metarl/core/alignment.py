"""Gradient alignment across tasks: how MAML looks through the gradients of its tasks.

To first order in the inner step size α, MAML's one-step objective of a task is
``L_q(θ − α g_s) = L_q(θ) − α ⟨g_q, g_s⟩ + O(α²)`` with ``g_s = ∇L_support(θ)`` and
``g_q = ∇L_query(θ)``: minimising it over tasks also increases the inner product between the
support and query gradients of the same task (Nichol et al. 2018, "On First-Order
Meta-Learning Algorithms", §5). These functions measure that inner product, and the same
between different tasks, from per-task gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from metarl.core.functional import Params


def per_task_gradients(
    task_losses: Callable[[Params], Tensor], params: Params, n_tasks: int
) -> Tensor:
    """``(n_tasks, P)``: the gradient of each task's loss at the shared ``params``, flattened.

    One backward pass: ``params`` are expanded to one copy per task (leaves), and task ``i``'s
    loss depends on copy ``i`` only, so the gradient of the summed losses with respect to copy
    ``i`` is task ``i``'s gradient.

    Args:
        task_losses: task-batched ``params -> (n_tasks,)`` losses.
        params: the parameters, without a task dimension.
        n_tasks: tasks in the batch.
    """
    copies = {
        name: p.detach().unsqueeze(0).expand(n_tasks, *p.shape).clone().requires_grad_(True)
        for name, p in params.items()
    }
    losses = task_losses(copies)
    grads = torch.autograd.grad(
        losses.sum(), list(copies.values()), allow_unused=True, materialize_grads=True
    )
    return torch.cat([g.reshape(n_tasks, -1) for g in grads], dim=1)


class GradientAlignment(NamedTuple):
    """Alignment of the support and query gradients of ``T`` tasks.

    Attributes:
        cosine: ``(2T, 2T)`` cosine similarities of ``[g_s,1..T; g_q,1..T]``.
        same_task_inner: mean over tasks of ``⟨g_s,i, g_q,i⟩``.
        across_task_inner: mean over pairs ``i ≠ j`` of ``⟨g_s,i, g_q,j⟩``.
        same_task_cosine: mean over tasks of ``cos(g_s,i, g_q,i)``.
        across_task_cosine: mean over pairs ``i ≠ j`` of ``cos(g_s,i, g_q,j)``.
    """

    cosine: Tensor
    same_task_inner: float
    across_task_inner: float
    same_task_cosine: float
    across_task_cosine: float


def gradient_alignment(support: Tensor, query: Tensor) -> GradientAlignment:
    """Inner products and cosines between support gradients ``(T, P)`` and query gradients
    ``(T, P)`` of the same tasks (row ``i`` of each is task ``i``), ``T ≥ 2``."""
    if support.shape != query.shape or support.dim() != 2 or support.shape[0] < 2:
        raise ValueError(
            f"need support and query gradients of the same T >= 2 tasks, (T, P); got "
            f"{tuple(support.shape)} and {tuple(query.shape)}"
        )
    n = support.shape[0]
    stacked = torch.cat([support, query]).double()
    unit = stacked / stacked.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cosine = unit @ unit.T
    inner = support.double() @ query.double().T  # (T, T): ⟨g_s,i, g_q,j⟩
    cross = cosine[:n, n:]
    off = ~torch.eye(n, dtype=torch.bool)
    return GradientAlignment(
        cosine.float(),
        float(inner.diagonal().mean()),
        float(inner[off].mean()),
        float(cross.diagonal().mean()),
        float(cross[off].mean()),
    )
