"""Policy-gradient losses of MAML-TRPO, per task. Pure functions of tensors.

Shapes: ``(T, n_tasks, E)`` for per-step quantities, with ``masks`` 1 on valid steps and 0 on
padding. Every loss is a mean over the task's valid steps (all its episodes pooled), so a task
with shorter episodes is not down-weighted per step; the result is ``(n_tasks,)``, ready for
:func:`metarl.core.inner_step` (which differentiates the sum, giving each task its own gradient)
or for a mean over tasks (the meta-objective).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence


def _check(name: str, tensor: Tensor, masks: Tensor) -> None:
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (T, n_tasks, E), got {tuple(masks.shape)}")
    if tensor.shape != masks.shape:
        raise ValueError(
            f"{name} must have the shape of masks {tuple(masks.shape)}, got {tuple(tensor.shape)}"
        )


def masked_task_mean(values: Tensor, masks: Tensor) -> Tensor:
    """Mean of ``values`` over each task's valid steps.

    Args:
        values: ``(T, n_tasks, E)``; entries on padding are ignored (they must be finite).
        masks: ``(T, n_tasks, E)``.

    Returns:
        ``(n_tasks,)``.

    Raises:
        ValueError: a task without any valid step.
    """
    _check("values", values, masks)
    counts = masks.sum(dim=(0, 2))
    if bool((counts == 0).any()):
        raise ValueError("a task has no valid step: its mean is undefined")
    return (values * masks).sum(dim=(0, 2)) / counts


def reinforce_loss(log_probs: Tensor, advantages: Tensor, masks: Tensor) -> Tensor:
    """The inner-loop REINFORCE loss ``-mean_t log π(a_t | s_t) A_t`` per task.

    Its gradient is the policy-gradient estimate of the paper's inner update (Sec. 3.2).

    Args:
        log_probs: ``(T, n_tasks, E)`` log-probabilities of the taken actions (differentiable).
        advantages: ``(T, n_tasks, E)``, treated as constants.
        masks: ``(T, n_tasks, E)``.

    Returns:
        ``(n_tasks,)``.
    """
    _check("log_probs", log_probs, masks)
    return -masked_task_mean(log_probs * advantages.detach(), masks)


def surrogate_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, masks: Tensor
) -> Tensor:
    """TRPO's surrogate loss ``-mean_t [π(a_t|s_t) / π_old(a_t|s_t)] A_t`` per task.

    At ``π = π_old`` (ratio 1) its gradient is the REINFORCE gradient; elsewhere it is the
    importance-weighted estimate of the new policy's advantage (Schulman et al. 2015).

    Args:
        log_probs: ``(T, n_tasks, E)`` under the policy being optimised (differentiable).
        old_log_probs: ``(T, n_tasks, E)`` under the policy that sampled the actions.
        advantages: ``(T, n_tasks, E)``.
        masks: ``(T, n_tasks, E)``.

    Returns:
        ``(n_tasks,)``.
    """
    _check("log_probs", log_probs, masks)
    _check("old_log_probs", old_log_probs, masks)
    ratio = torch.exp(log_probs - old_log_probs.detach())
    return -masked_task_mean(ratio * advantages.detach(), masks)


def mean_kl(old: Distribution, new: Distribution, masks: Tensor) -> Tensor:
    """Mean ``KL(π_old(·|s_t) || π_new(·|s_t))`` over each task's valid steps.

    TRPO's trust region (Schulman et al. 2015, Eq. 12). pytorch-maml-rl measures the reverse
    ``KL(new || old)``; both vanish with zero gradient at ``new = old`` and have the same
    Hessian there (the Fisher matrix), so the natural-gradient direction is the same.

    Args:
        old, new: distributions of batch shape ``(T, n_tasks, E)`` (their event dimensions are
            summed by ``kl_divergence``).
        masks: ``(T, n_tasks, E)``.

    Returns:
        ``(n_tasks,)``.
    """
    return masked_task_mean(kl_divergence(old, new), masks)
