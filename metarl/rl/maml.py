"""MAML for policies: adaptation on episodes, and the post-adaptation objective as a function of θ.

The TRPO meta-update treats ``θ ↦ (surrogate loss, KL)`` as an ordinary function of the
policy's parameters: every evaluation re-runs the inner adaptation from θ on the same support
episodes, so the natural gradient and the trust region both see θ through θ'(θ) (Finn et al.
2017, Sec. 3.2 and App. A.2; pytorch-maml-rl ``MAMLTRPO.surrogate_loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Independent

from metarl.core.adapt import LossFn, MetaGradientMode, inner_step
from metarl.core.functional import Params, expand_to_tasks
from metarl.core.step_size import as_step_size
from metarl.rl.episodes import Episodes
from metarl.rl.losses import mean_kl, reinforce_loss, surrogate_loss
from metarl.rl.policy import GaussianMLPPolicy, detach_distribution
from metarl.rl.trpo import FlatFn, flatten, unflatten


def _require_advantages(episodes: Episodes) -> Tensor:
    if episodes.advantages is None:
        raise ValueError("episodes have no advantages: call metarl.rl.episodes.with_advantages")
    return episodes.advantages


def inner_loss(policy: GaussianMLPPolicy, episodes: Episodes) -> LossFn:
    """``params -> (n_tasks,)`` REINFORCE losses of ``episodes`` (the inner-loop loss)."""
    advantages = _require_advantages(episodes)

    def loss(params: Params) -> Tensor:
        pi = policy.distribution(params, episodes.observations, task_dim=1)
        log_probs = pi.log_prob(episodes.actions)
        return reinforce_loss(log_probs, advantages, episodes.masks)

    return loss


def adapt_to_episodes(
    policy: GaussianMLPPolicy,
    params: Params,
    support: Sequence[Episodes],
    step_sizes: float | Sequence[float],
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-3,
) -> Params:
    """θ' after one inner step per element of ``support`` (step ``k`` on ``support[k]``).

    Args:
        policy: the policy module.
        params: θ with a leading task dimension (see :func:`metarl.core.expand_to_tasks`).
        support: the episodes of each inner step, sampled with the parameters of that step.
        step_sizes: α, or one α per step.
        mode: how the meta-gradient crosses the steps (see :mod:`metarl.core.adapt`).
        fd_epsilon: perturbation of the finite-difference mode.
    """
    for k, episodes in enumerate(support):
        params = inner_step(inner_loss(policy, episodes), params, step_sizes, k, mode, fd_epsilon)
    return params


class MetaObjective(NamedTuple):
    """The post-adaptation objective of every task at one θ.

    Attributes:
        losses: ``(n_tasks,)`` TRPO surrogate losses on the query episodes.
        kls: ``(n_tasks,)`` mean KL between the old adapted policy and the one at this θ.
        query_policy: ``π_θ'`` on the query observations (detach it to get the "old" policy).
    """

    losses: Tensor
    kls: Tensor
    query_policy: Independent


def meta_objective(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent | None = None,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-3,
) -> MetaObjective:
    """Adapt θ on ``support``, then the surrogate loss and KL of ``query`` at θ'.

    Args:
        policy: the policy module.
        theta: θ, without a task dimension (gradients flow back to these tensors).
        support: the inner steps' episodes.
        query: episodes sampled with the adapted parameters of the old θ, with advantages.
        step_sizes: the inner α (per step).
        old_policy: ``π_θ'_old`` on the query observations; ``None`` means "θ is the old θ":
            the adapted policy itself, detached, is used (ratio 1, KL 0).
        mode: meta-gradient mode of the adaptation (``first_order`` gives the same values
            without a second-order graph, which is all a line search needs).
        fd_epsilon: perturbation of the finite-difference mode.
    """
    advantages = _require_advantages(query)
    adapted = adapt_to_episodes(
        policy, expand_to_tasks(theta, query.n_tasks), support, step_sizes, mode, fd_epsilon
    )
    pi = policy.distribution(adapted, query.observations, task_dim=1)
    old = detach_distribution(pi) if old_policy is None else old_policy
    losses = surrogate_loss(
        pi.log_prob(query.actions), old.log_prob(query.actions), advantages, query.masks
    )
    return MetaObjective(losses, mean_kl(old, pi, query.masks), pi)


def objective_values(
    policy: GaussianMLPPolicy,
    like: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent,
) -> Callable[[Tensor], tuple[float, float]]:
    """flat θ ↦ (mean surrogate loss, mean KL) over tasks: what the line search evaluates.

    Values only, so the adaptation runs first-order (same numbers, no second-order graph).
    ``like`` gives the names and shapes of the parameters.
    """

    def evaluate(flat: Tensor) -> tuple[float, float]:
        at = meta_objective(
            policy, unflatten(flat, like), support, query, step_sizes, old_policy, "first_order"
        )
        return float(at.losses.detach().mean()), float(at.kls.detach().mean())

    return evaluate


def kl_gradient(
    policy: GaussianMLPPolicy,
    like: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-3,
) -> Callable[[Tensor], Tensor]:
    """flat θ ↦ flat ∇_θ mean KL(π_old || π_θ'(θ)), through the adaptation (``mode``).

    The input of :func:`metarl.rl.trpo.finite_difference_fvp`.
    """

    def gradient(flat: Tensor) -> Tensor:
        leaves = {n: t.clone().requires_grad_(True) for n, t in unflatten(flat, like).items()}
        kl = meta_objective(
            policy, leaves, support, query, step_sizes, old_policy, mode, fd_epsilon
        ).kls.mean()
        return flatten(torch.autograd.grad(kl, list(leaves.values())))

    return gradient


def inner_loss_hessian(
    policy: GaussianMLPPolicy, params: Params, episodes: Episodes
) -> Callable[[Params], Params]:
    """``w ↦ H w`` per task: the exact Hessian of :func:`inner_loss` at ``params``.

    ``params`` has a leading task dimension; ``w`` and the result are shaped like it. The
    REINFORCE loss is ``Σ_t weight_t · log π(a_t | s_t)`` with ``weight = −advantage · mask /
    valid steps``, so this is :meth:`GaussianMLPPolicy.log_prob_hessian` with those weights.
    """
    advantages = _require_advantages(episodes).detach()
    masks = episodes.masks
    weights = -(advantages * masks) / masks.sum(dim=(0, 2), keepdim=True)  # (T, n_tasks, E)
    return policy.log_prob_hessian(
        params,
        episodes.observations.movedim(1, 0),
        episodes.actions.movedim(1, 0),
        weights.movedim(1, 0),
    )


def gauss_newton_fvp(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    damping: float = 0.0,
    mode: MetaGradientMode = "second_order",
) -> FlatFn:
    """``v ↦ F v + damping · v``: the Hessian of the mean KL at θ_old, in Gauss–Newton form.

    The same matrix as :func:`metarl.rl.trpo.fisher_vector_product` applied to the KL of
    :func:`meta_objective` (equal up to round-off, see ``tests/test_rl_trpo.py``), computed
    without differentiating the KL twice. Write ``y_i(θ) = (μ, log σ)`` of task ``i``'s policy
    on its query observations, after the adaptation ``θ'_i(θ)``. At θ_old the KL and its
    gradient in ``y`` vanish, so its Hessian is exactly ``Σ_i J_iᵀ M_i J_i`` with ``J_i =
    ∂y_i/∂θ`` and ``M_i`` the Fisher matrix of the diagonal Gaussian in ``(μ, log σ)``:
    ``diag(1/σ², 2)`` times each step's KL weight ``mask / (valid steps of task i · n_tasks)``
    (the standard TRPO product of Schulman et al. 2015, App. C).

    ``J_i = Q_i A_i`` where ``Q_i = ∂y_i/∂θ'_i`` is the query forward pass and ``A_i =
    ∂θ'_i/∂θ = Π_k (I − α_k H_ik)`` the inner steps (``H_ik``: Hessian of the support loss of
    step ``k`` at that step's parameters). Each factor is symmetric (α is a scalar per step),
    so ``A_i v`` and ``A_iᵀ w`` are one Hessian-vector product per step
    (:func:`inner_loss_hessian`), ``Q_i a`` a Jacobian-vector product and ``Q_iᵀ b`` a
    backward pass (:meth:`GaussianMLPPolicy.linearize`). All of them run on activations
    computed once, since every conjugate-gradient iteration differentiates the same point:
    compared with autograd's double backward of ∇KL this skips the third-order terms that the
    vanishing KL gradient multiplies by zero and the forward pass of every product (issue 4).

    Args:
        policy: the Gaussian policy module (the Fisher matrix ``M`` assumes its distribution).
        theta: θ_old, without a task dimension.
        support: the inner steps' episodes.
        query: the query episodes (only observations and masks are used).
        step_sizes: the inner α (a scalar per step: ``I − α H`` must be symmetric).
        damping: λ of ``F + λ I``.
        mode: meta-gradient mode of the adaptation: ``second_order``, or ``first_order``
            (``A_i = I``). The finite-difference mode has its own Fisher product,
            :func:`metarl.rl.trpo.finite_difference_fvp`.

    Returns:
        The product, flat ``(n,)`` in, detached flat ``(n,)`` out.
    """
    if mode not in ("second_order", "first_order"):
        raise ValueError(
            f"gauss_newton_fvp: mode must be second_order or first_order, got {mode!r}"
        )
    n_tasks = query.n_tasks
    names = list(theta)
    alpha = as_step_size(step_sizes)
    # θ' step by step (values only), and each step's support-loss Hessian at its own input.
    params = expand_to_tasks({name: p.detach() for name, p in theta.items()}, n_tasks)
    hessians: list[Callable[[Params], Params]] = []
    for k, episodes in enumerate(support):
        if mode != "first_order":
            hessians.append(inner_loss_hessian(policy, params, episodes))
        adapted = inner_step(inner_loss(policy, episodes), params, step_sizes, k, "first_order")
        params = {name: p.detach() for name, p in adapted.items()}

    # The query pass at θ' in task-first layout, (n_tasks, T, E, action_dim).
    linear = policy.linearize(params, query.observations.movedim(1, 0))
    masks = query.masks.movedim(1, 0).unsqueeze(-1)  # (n_tasks, T, E, 1)
    weights = masks / (masks.sum(dim=(1, 2, 3), keepdim=True) * n_tasks)  # KL's mean weights
    fisher_mean = weights / (2.0 * linear.log_std).exp()  # 1 / σ²
    fisher_log_std = 2.0 * weights

    def through_steps(vectors: Params, order: Sequence[int]) -> Params:
        for k in order:  # (I − α_k H_k) w
            curvature = hessians[k](vectors)
            vectors = {name: vectors[name] - alpha(k, name) * curvature[name] for name in names}
        return vectors

    @torch.no_grad()
    def product(vector: Tensor) -> Tensor:
        per_task = {
            name: v.expand(n_tasks, *v.shape) for name, v in unflatten(vector, theta).items()
        }  # the same direction for every task
        tangents = through_steps(per_task, range(len(hessians)))  # A v
        d_mean, d_log_std = linear.jvp(tangents)  # Q A v
        pulled = linear.vjp(fisher_mean * d_mean, fisher_log_std * d_log_std)  # Qᵀ M Q A v
        pulled = through_steps(pulled, range(len(hessians) - 1, -1, -1))  # Aᵀ Qᵀ M Q A v
        return flatten(pulled[name].sum(dim=0) for name in names) + damping * vector

    return product
