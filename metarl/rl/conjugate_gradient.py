"""Conjugate gradient for ``A x = b`` with ``A`` symmetric positive definite, given as a matvec.

TRPO uses it to compute the natural-gradient direction ``F^{-1} g`` from Fisher-vector products
without ever forming the Fisher matrix ``F`` (Schulman et al. 2015, Appendix C).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iterations: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Approximately solve ``A x = b``, starting from ``x = 0``.

    Args:
        matvec: ``v -> A v`` for a symmetric positive definite ``A``; takes and returns ``(n,)``.
        b: ``(n,)`` right-hand side.
        iterations: maximum number of iterations (matvec calls); in exact arithmetic ``n``
            iterations solve the system.
        residual_tol: stop early once the squared residual norm ``|b - A x|^2`` falls below it.

    Returns:
        ``(n,)`` approximate solution ``x``. Whether it carries an autograd graph depends on
        ``matvec``; TRPO callers pass detached products.

    Raises:
        ValueError: on a non-vector ``b``, a matvec result of the wrong shape, or a search
            direction ``p`` with ``p^T A p <= 0`` (``A`` is not positive definite).
    """
    if b.dim() != 1:
        raise ValueError(f"b must be a flat vector (n,), got shape {tuple(b.shape)}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    if residual_tol < 0:
        raise ValueError(f"residual_tol must be non-negative, got {residual_tol}")

    x = torch.zeros_like(b)
    residual = b  # b - A x with x = 0; never modified in place, so b is safe
    direction = b
    residual_sq = residual @ residual
    for _ in range(iterations):
        if residual_sq < residual_tol:
            break
        a_direction = matvec(direction)
        if a_direction.shape != b.shape:
            raise ValueError(
                f"matvec must return shape {tuple(b.shape)}, got {tuple(a_direction.shape)}"
            )
        curvature = direction @ a_direction
        if not curvature > 0:
            raise ValueError(
                f"matvec is not positive definite: p^T A p = {float(curvature):.3g} along a "
                "search direction (add damping to the Fisher-vector product?)"
            )
        step = residual_sq / curvature
        x = x + step * direction
        residual = residual - step * a_direction
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x
