"""Conjugate gradient for ``A x = b`` with ``A`` symmetric positive definite, given as a matvec.

TRPO uses it to compute the natural-gradient direction ``F^{-1} g`` from Fisher-vector products
without ever forming the Fisher matrix ``F`` (Schulman et al. 2015, Appendix C); iMAML uses the
batched form for its implicit meta-gradient ``(I + H/λ)^{-1} g``, one system per task
(Rajeswaran et al. 2019).
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


def batched_conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iterations: int = 10,
    residual_tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Solve ``A_i x_i = b_i`` for every row ``i`` at once, each with its own step sizes.

    For a block-diagonal operator whose blocks are independent (one per task): one matvec call
    applies every block, and each row runs the conjugate-gradient recursion of
    :func:`conjugate_gradient` with its own ``α``, ``β``; a row whose squared residual falls
    below ``residual_tol`` stops moving, and so does a row that meets a direction of
    non-positive curvature (its ``A_i`` is not positive definite there: iMAML's ``I + H/λ``
    when λ is too small for the loss's negative curvature), keeping its last iterate.

    Args:
        matvec: ``(n_rows, n) -> (n_rows, n)``, row ``i`` multiplied by ``A_i`` (symmetric
            positive definite).
        b: ``(n_rows, n)`` right-hand sides.
        iterations: matvec calls.
        residual_tol: per-row stopping threshold on ``|b_i − A_i x_i|²``.

    Returns:
        ``x (n_rows, n)`` and the final squared residual norms ``(n_rows,)``.

    Raises:
        ValueError: ``b`` is not 2-D.
    """
    if b.dim() != 2:
        raise ValueError(f"b must be (n_rows, n), got shape {tuple(b.shape)}")
    x = torch.zeros_like(b)
    residual, direction = b, b
    residual_sq = (residual * residual).sum(dim=1)
    stopped = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
    for _ in range(iterations):
        active = (residual_sq >= residual_tol) & ~stopped
        if not bool(active.any()):
            break
        a_direction = matvec(direction)
        curvature = (direction * a_direction).sum(dim=1)
        stopped |= active & ~(curvature > 0)
        active &= ~stopped
        step = torch.where(active, residual_sq / torch.where(active, curvature, 1.0), 0.0)
        x = x + step.unsqueeze(1) * direction
        residual = residual - step.unsqueeze(1) * a_direction
        new_residual_sq = (residual * residual).sum(dim=1)
        beta = torch.where(active, new_residual_sq / torch.where(active, residual_sq, 1.0), 0.0)
        direction = residual + beta.unsqueeze(1) * direction
        residual_sq = new_residual_sq
    return x, residual_sq
