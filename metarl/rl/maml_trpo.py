"""The MAML-TRPO meta-update (Finn et al. 2017, Alg. 3 with the TRPO meta-update of App. A.2).

One meta-iteration, top to bottom:

1. :func:`sample_meta_batch` — for every task of the meta-batch, support episodes with θ and an
   inner REINFORCE step (fresh episodes per step when there are several), then query episodes
   with the adapted θ';
2. :func:`natural_step` — the surrogate loss at θ'(θ) and its gradient ``g``; Fisher-vector
   products through the adaptation (:mod:`metarl.rl.fisher`); ``F⁻¹ g`` by conjugate gradient;
   the full step scaled to the trust region ``max_kl``;
3. :func:`meta_update` — the backtracking line search on that step, applied to θ if a
   candidate is accepted.

The training loop (:mod:`metarl.rl.trainer`) only orchestrates: tasks, these calls, logs,
checkpoints. A second outer objective (a clipped PPO/ProMP-style one) would be a sibling module
with its own ``meta_update``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Independent

from metarl.core.conjugate_gradient import conjugate_gradient
from metarl.core.functional import Params
from metarl.distributed import ALONE, Shard, TaskReduction
from metarl.envs import BatchedTaskEnv
from metarl.rl.config import RLConfig
from metarl.rl.episodes import Episodes
from metarl.rl.fisher import finite_difference_fvp, fisher_vector_product, gauss_newton_fvp
from metarl.rl.maml import kl_gradient, meta_objective, objective_values, sampled_adaptation
from metarl.rl.policy import GaussianMLPPolicy, detach_distribution
from metarl.rl.trpo import (
    FlatFn,
    LineSearchResult,
    flatten,
    line_search,
    trust_region_step,
    unflatten,
)


def sample_meta_batch(
    env: BatchedTaskEnv,
    tasks: list[dict[str, Any]],
    n_episodes: int,
    policy: GaussianMLPPolicy,
    theta: Params,
    config: RLConfig,
    generator: torch.Generator | None,
    shard: Shard | None = None,
) -> tuple[list[Episodes], Episodes]:
    """One meta-iteration's episodes, with advantages: the support episodes of every inner step
    (the first with θ, each later one with the previous step's parameters) and the query
    episodes with the adapted θ'. ``n_episodes`` per task; ``env`` holds ``len(tasks) ×
    n_episodes`` environments, already seeded.

    The inner steps here only produce θ' to sample with (no graph): :func:`natural_step`
    recomputes the same θ' as a differentiable function of θ. With several processes,
    ``tasks`` are this process's ``shard`` of the meta-batch.
    """
    episodes, _ = sampled_adaptation(
        env, tasks, n_episodes, policy, theta, config.inner_steps, config.inner_lr, config,
        generator, shard=shard,
    )  # fmt: skip
    return episodes[:-1], episodes[-1]


class NaturalStep(NamedTuple):
    """One meta-iteration's TRPO step, before its line search.

    Attributes:
        full_step: flat ``s (n,)``, scaled so that ``½ sᵀ(F + λI)s = max_kl``; the line search
            tries ``θ − β^k s``. NaN where the loss or its gradient is not finite.
        grad: flat ``g = ∇_θ`` of the mean post-adaptation surrogate loss ``(n,)``.
        loss_before: that loss at θ.
        old_policy: ``π_θ'`` on the query observations at this θ, detached (the KL's reference).
    """

    full_step: Tensor
    grad: Tensor
    loss_before: float
    old_policy: Independent


def natural_step(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    config: RLConfig,
    reduction: TaskReduction = ALONE,
) -> NaturalStep:
    """The natural-gradient step of MAML-TRPO (Finn et al. 2017, App. A.2) at θ.

    Surrogate loss at θ'(θ) and its gradient ``g``; the Fisher-vector product through the
    adaptation (``config.fisher_product``, on every ``fisher_subsample``-th episode); ``F⁻¹g``
    by conjugate gradient; scaled to the trust region ``max_kl``. ``reduction`` averages over
    the tasks of every process: each holds its share, and the gradient and every product are
    summed, so all processes solve the same system.
    """
    # --- outer loss: surrogate at θ'(θ), averaged over tasks, and its gradient -------------
    objective = meta_objective(
        policy, theta, support, query, config.inner_lr,
        mode=config.meta_gradient, fd_epsilon=config.fd_epsilon,
    )  # fmt: skip
    loss = reduction.share(objective.losses)
    loss_before = reduction.total_float(float(loss.detach()))
    old_policy = detach_distribution(objective.query_policy)
    theta_old = flatten(p.detach() for p in theta.values())
    every = config.fisher_subsample
    # Only the double backward of the full batch's KL differentiates this graph again.
    reuse_graph = config.fisher_product == "double_backward" and every == 1
    if math.isfinite(loss_before):
        grad = flatten(torch.autograd.grad(loss, list(theta.values()), retain_graph=reuse_graph))
        grad = reduction.total(grad)
    else:  # nothing to solve: the line search rejects a NaN step
        grad = torch.full_like(theta_old, math.nan)

    # --- Fisher-vector product: Hessian of the mean KL at θ, through the adaptation --------
    # On every k-th episode if fisher_subsample = k > 1 (then with that subset's own KL).
    fisher_support = [episodes.every_kth_episode(every) for episodes in support]
    fisher_query = query.every_kth_episode(every)
    # With several processes each product is this process's share, summed, then damped.
    damping = config.cg_damping if reduction.world is None else 0.0
    if config.fisher_product == "gauss_newton":
        fvp = gauss_newton_fvp(
            policy, theta, fisher_support, fisher_query, config.inner_lr,
            damping, config.meta_gradient, reduction.n_total or None,
        )  # fmt: skip
    else:
        fisher = objective if every == 1 else meta_objective(
            policy, theta, fisher_support, fisher_query, config.inner_lr,
            mode=config.meta_gradient, fd_epsilon=config.fd_epsilon,
        )  # fmt: skip
        if config.fisher_product == "double_backward":
            fvp = fisher_vector_product(reduction.share(fisher.kls), list(theta.values()), damping)
        else:
            fisher_kl_gradient = kl_gradient(
                policy, theta, fisher_support, fisher_query, config.inner_lr,
                detach_distribution(fisher.query_policy), config.meta_gradient,
                config.fd_epsilon, reduction,
            )  # fmt: skip
            fvp = finite_difference_fvp(fisher_kl_gradient, theta_old, damping, config.fd_epsilon)
    if reduction.world is not None:
        fvp = _summed(fvp, reduction, config.cg_damping)

    # --- natural gradient by conjugate gradient, scaled to the trust region ---------------
    if bool(torch.isfinite(grad).all()):
        direction = conjugate_gradient(fvp, grad, config.cg_iterations)
        full_step = trust_region_step(direction, fvp, config.max_kl)
    else:
        full_step = grad
    return NaturalStep(full_step, grad, loss_before, old_policy)


def _summed(fvp: FlatFn, reduction: TaskReduction, damping: float) -> FlatFn:
    """``v ↦ Σ_processes fvp(v) + damping · v``: the whole meta-batch's damped product from
    each process's undamped share (every process calls it with the same ``v``)."""

    def product(vector: Tensor) -> Tensor:
        return reduction.total(fvp(vector)) + damping * vector

    return product


def meta_update(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    config: RLConfig,
    iteration: int = 0,
    reduction: TaskReduction = ALONE,
) -> LineSearchResult:
    """One MAML-TRPO meta-update of θ in place: :func:`natural_step`, then the line search.

    θ (the policy's own parameter tensors) changes only if the line search accepts a candidate.
    With several processes (``reduction``), every process holds its tasks' episodes and all of
    them take the same step.

    Returns:
        The line search's outcome (losses before and after, KL, steps tried, accepted).
    """
    step = natural_step(policy, theta, support, query, config, reduction)

    # --- backtracking line search; θ changes only if a candidate is accepted ---------------
    evaluate = objective_values(
        policy, theta, support, query, config.inner_lr, step.old_policy, reduction
    )
    theta_old = flatten(p.detach() for p in theta.values())
    result = line_search(
        evaluate, theta_old, step.full_step, step.loss_before, config.max_kl,
        config.line_search_ratio, config.line_search_steps, config.line_search_rule,
    )  # fmt: skip
    if result.accepted:
        with torch.no_grad():
            for p, new in zip(theta.values(), unflatten(result.params, theta).values()):
                p.copy_(new)
    elif not math.isfinite(result.loss_before):
        warnings.warn(
            f"iteration {iteration}: the surrogate loss is {result.loss_before}; the "
            "meta-update was rejected and θ kept",
            RuntimeWarning,
            stacklevel=2,
        )
    return result
