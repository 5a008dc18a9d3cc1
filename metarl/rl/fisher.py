"""Fisher-vector products of MAML-TRPO: the Hessian of the mean KL at θ_old, through the adaptation.

TRPO's natural gradient solves ``F d = g`` by conjugate gradient, where ``F`` is the Hessian of
the mean KL between the adapted policies at θ_old and at θ. In MAML the KL depends on θ through
θ'(θ), so every product differentiates through the inner adaptation. Three ways to compute the
same matrix (``fisher_product`` in the config), tested equal up to round-off:

- :func:`fisher_vector_product`: double backward of the KL (Pearlmutter's trick), exact;
- :func:`finite_difference_fvp`: central differences of KL gradients (the paper's, App. A.2);
- :func:`gauss_newton_fvp`: ``Jᵀ M J`` on activations kept once, by hand-written R-operator
  products (the locomotion configs' choice, fastest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metarl.core.adapt import MetaGradientMode, inner_step
from metarl.core.functional import Params, expand_to_tasks
from metarl.core.step_size import as_step_size
from metarl.rl.episodes import Episodes
from metarl.rl.maml import inner_loss, require_advantages
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.trpo import FlatFn, flatten, unflatten


def fisher_vector_product(kl: Tensor, params: Sequence[Tensor], damping: float = 0.0) -> FlatFn:
    """``v ↦ (∇²KL) v + damping · v`` by double backward (Pearlmutter's trick).

    ``∇KL`` is built once with ``create_graph=True``; each product then costs one backward pass
    of ``∇KL · v``. At θ_old the KL and its gradient vanish, so its Hessian is the Fisher matrix
    of the adapted policy pulled back through the adaptation, ``Jᵀ F J`` with ``J = ∂θ'/∂θ``.

    Args:
        kl: scalar mean KL at θ, with a graph through the inner adaptation to ``params``.
        params: the leaves θ.
        damping: λ of ``F + λ I`` (keeps conjugate gradient well posed).

    Returns:
        The product, detached, flat ``(n,)``.
    """
    grads = torch.autograd.grad(
        kl, params, create_graph=True, allow_unused=True, materialize_grads=True
    )
    flat_grad = flatten(grads)

    def product(vector: Tensor) -> Tensor:
        hv = torch.autograd.grad(
            flat_grad @ vector, params, retain_graph=True, allow_unused=True,
            materialize_grads=True,
        )  # fmt: skip
        return flatten(hv).detach() + damping * vector

    return product


def finite_difference_fvp(
    kl_gradient: FlatFn, theta: Tensor, damping: float = 0.0, epsilon: float = 1e-2
) -> FlatFn:
    """``v ↦ [∇KL(θ + εv) − ∇KL(θ − εv)] / 2ε + damping · v``, with ``ε = epsilon / ‖v‖``.

    The paper's way (App. A.2: "we use finite differences to compute the Hessian-vector
    products for TRPO"): only first derivatives of the KL are needed, at the price of two
    re-adaptations per product; the error is O(ε²) for a smooth policy (tanh). With ReLU the
    adaptation θ'(θ) has kinks and the product is biased where units switch within ±εv
    (docs/numerics.md measures how much).

    Args:
        kl_gradient: flat θ ↦ flat ∇KL at that θ (KL against the fixed old policy).
        theta: the flat θ_old ``(n,)``.
        damping: λ of ``F + λ I``.
        epsilon: size of the perturbation, whatever the scale of ``v``.
    """

    def product(vector: Tensor) -> Tensor:
        norm = float(vector.norm())
        if norm == 0.0:
            return torch.zeros_like(vector)
        eps = epsilon / norm
        plus, minus = kl_gradient(theta + eps * vector), kl_gradient(theta - eps * vector)
        return (plus - minus).detach() / (2.0 * eps) + damping * vector

    return product


def inner_loss_hessian(
    policy: GaussianMLPPolicy, params: Params, episodes: Episodes
) -> Callable[[Params], Params]:
    """``w ↦ H w`` per task: the exact Hessian of :func:`inner_loss` at ``params``.

    ``params`` has a leading task dimension; ``w`` and the result are shaped like it. The
    REINFORCE loss is ``Σ_t weight_t · log π(a_t | s_t)`` with ``weight = −advantage · mask /
    valid steps``, so this is :meth:`GaussianMLPPolicy.log_prob_hessian` with those weights.
    """
    advantages = require_advantages(episodes).detach()
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
    n_total: int | None = None,
) -> FlatFn:
    """``v ↦ F v + damping · v``: the Hessian of the mean KL at θ_old, in Gauss–Newton form.

    The same matrix as :func:`fisher_vector_product` applied to the KL of
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
    vanishing KL gradient multiplies by zero and the forward pass of every product.

    Args:
        policy: the Gaussian policy module (the Fisher matrix ``M`` assumes its distribution).
        theta: θ_old, without a task dimension.
        support: the inner steps' episodes.
        query: the query episodes (only observations and masks are used).
        step_sizes: the inner α (a scalar per step: ``I − α H`` must be symmetric).
        damping: λ of ``F + λ I``.
        mode: meta-gradient mode of the adaptation: ``second_order``, or ``first_order``
            (``A_i = I``). The finite-difference mode has its own Fisher product,
            :func:`finite_difference_fvp`.
        n_total: the tasks the mean KL averages over, when these are one process's share of a
            larger meta-batch (default: these tasks).

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
    mean_over = n_total or n_tasks
    weights = masks / (masks.sum(dim=(1, 2, 3), keepdim=True) * mean_over)  # KL's mean weights
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
