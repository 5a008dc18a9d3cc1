"""TRPO's step rules (Schulman et al. 2015, App. C), as small functions of flat parameter vectors.

- :func:`trust_region_step`: scale the natural-gradient direction ``d`` to the full step
  ``s = sqrt(2 δ / dᵀ F d) d`` that reaches KL ≈ δ = ``max_kl`` under the quadratic model;
- :func:`line_search`: backtrack on ``θ − f s`` until the surrogate loss is lower and the
  mean KL is within δ; ``f`` shrinks by β each time (TRPO's rule) or, with the ``measured_kl``
  rule, to where the KL measured at the rejected candidate says the trust region's edge is.

The Fisher-vector products are in :mod:`metarl.rl.fisher`, conjugate gradient in
:mod:`metarl.rl.conjugate_gradient`; :mod:`metarl.rl.maml_trpo` puts them together. Parameters
travel as flat vectors here; :func:`flatten` and :func:`unflatten` convert.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from metarl.core.functional import Params

FlatFn = Callable[[Tensor], Tensor]
"""A map from one flat vector ``(n,)`` to another ``(n,)``."""

LINE_SEARCH_RULES: tuple[str, ...] = ("backtrack", "measured_kl")
KL_MARGIN = 0.95
"""The ``measured_kl`` rule aims at this fraction of the KL-implied edge (``0.95² δ`` when the
KL is quadratic in the step), so round-off does not put the next candidate just outside."""


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector ``(n,)``."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Tensor, like: Params) -> Params:
    """Split ``flat (n,)`` into tensors shaped like ``like``'s (views of ``flat``).

    Raises:
        ValueError: ``flat`` has the wrong number of elements.
    """
    sizes = [p.numel() for p in like.values()]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"expected a flat vector of {sum(sizes)} values, got {tuple(flat.shape)}")
    chunks = torch.split(flat, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(like.items(), chunks)}


def trust_region_step(direction: Tensor, fvp: FlatFn, max_kl: float) -> Tensor:
    """Scale the natural-gradient ``direction`` d so that ``½ sᵀ F s = max_kl``.

    Returns:
        ``s = d · sqrt(2 max_kl / dᵀ F d)``; all NaN if ``dᵀ F d`` is not positive and finite
        (the line search then rejects the step).
    """
    curvature = float(direction @ fvp(direction))
    if not (math.isfinite(curvature) and curvature > 0.0):
        return torch.full_like(direction, math.nan)
    return direction * math.sqrt(2.0 * max_kl / curvature)


class LineSearchResult(NamedTuple):
    """Outcome of :func:`line_search`.

    Attributes:
        params: the flat θ to use next: the accepted candidate, or θ_old unchanged.
        accepted: whether a candidate was accepted.
        steps: candidates evaluated (1 = the full step was accepted; 0 = nothing to try).
        step_fraction: ``β^k`` of the accepted candidate, 0 if rejected.
        loss_before: surrogate loss at θ_old.
        loss_after: surrogate loss at ``params`` (``loss_before`` if rejected).
        kl: mean KL at ``params`` (0 if rejected).
    """

    params: Tensor
    accepted: bool
    steps: int
    step_fraction: float
    loss_before: float
    loss_after: float
    kl: float


def line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    theta: Tensor,
    full_step: Tensor,
    loss_before: float,
    max_kl: float,
    ratio: float = 0.8,
    max_steps: int = 15,
    rule: str = "backtrack",
) -> LineSearchResult:
    """Line search on ``θ − f_k · full_step``, ``f_0 = 1``, ``k = 0 .. max_steps − 1``.

    A candidate is accepted iff its loss and KL are finite, the loss is strictly below
    ``loss_before`` and the KL is at most ``max_kl``. Nothing is modified: when no candidate
    qualifies (or ``full_step``/``loss_before`` is not finite), θ_old itself is returned,
    which "restores θ" for the caller.

    The next fraction after a rejected candidate:

    - ``backtrack`` (TRPO, Schulman et al. 2015, App. C): ``f_{k+1} = β f_k``.
    - ``measured_kl``: when the candidate broke only the trust region (finite KL > δ), use the
      KL it measured instead of the quadratic model: KL ≈ c f² puts the edge at
      ``f_k √(δ / KL_k)``, so ``f_{k+1} = f_k · min(β, KL_MARGIN · √(δ / KL_k))``; otherwise
      (the loss did not fall, or is not finite) ``β f_k`` as TRPO. When the quadratic model
      underestimates the KL, this reaches the edge in one or two evaluations instead of many
      β-steps, and lands nearer to it.

    Args:
        evaluate: flat θ ↦ (surrogate loss, mean KL against the old policy).
        theta: flat θ_old ``(n,)``.
        full_step: flat step ``(n,)``; candidates move *against* it (it is a loss gradient
            direction).
        loss_before: the loss at θ_old.
        max_kl: the trust region δ.
        ratio: backtracking factor β in ``(0, 1)``.
        max_steps: number of candidates.
        rule: ``backtrack`` or ``measured_kl`` (:data:`LINE_SEARCH_RULES`).

    Raises:
        ValueError: an unknown ``rule``.
    """
    if rule not in LINE_SEARCH_RULES:
        raise ValueError(f"line search rule must be one of {LINE_SEARCH_RULES}, got {rule!r}")
    rejected = LineSearchResult(theta, False, 0, 0.0, loss_before, loss_before, 0.0)
    if not (math.isfinite(loss_before) and bool(torch.isfinite(full_step).all())):
        return rejected
    fraction = 1.0
    for k in range(max_steps):
        candidate = theta - fraction * full_step
        loss, kl = evaluate(candidate)
        if math.isfinite(loss) and math.isfinite(kl) and loss < loss_before and kl <= max_kl:
            return LineSearchResult(candidate, True, k + 1, fraction, loss_before, loss, kl)
        if rule == "backtrack":
            fraction = ratio ** (k + 1)  # as a power: the very candidates TRPO has always tried
        elif math.isfinite(kl) and kl > max_kl:
            fraction *= min(ratio, KL_MARGIN * math.sqrt(max_kl / kl))
        else:
            fraction *= ratio
    return rejected._replace(steps=max_steps)
