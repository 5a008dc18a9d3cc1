"""Training-mode BatchNorm whose second derivative is one short expression.

Second-order MAML differentiates BatchNorm twice: the inner step takes its gradient with a
graph, and the meta-gradient backpropagates through that gradient. PyTorch's own double
backward of BatchNorm is a long chain of full-size elementwise operations, about a quarter of a
Conv-4 meta-iteration on a CPU (``docs/speed.md``). Here the first backward is ATen's kernel and
the double backward is derived by hand: five per-channel sums and two fused outputs.

Per channel, over the ``M = N·H·W`` values, with ``x̂ = (x − μ)·s`` and ``s = 1/√(σ² + ε)``,
the first backward is

    gx = γ s (gy − a − x̂ b),   gγ = M b,   gβ = M a,   where a = mean(gy), b = mean(gy x̂).

Given the gradients ``(ĝx, ĝγ, ĝβ)`` of a loss on ``(gx, gγ, gβ)``, and the per-channel sums
``S₁ = Σ ĝx (gy − a)``, ``S₂ = Σ ĝx x̂``, ``m = mean(ĝx)``, with ``k = γ s² / M``:

    ∂/∂gy = γ s ĝx + (ĝγ − γ s S₂/M) x̂ + ĝβ − γ s m
    ∂/∂γ  = s (S₁ − b S₂)
    ∂/∂x  = (−k S₁ + 3 k b S₂ − ĝγ s b) x̂ + (ĝγ s − k S₂) gy − k M b ĝx
            + k S₂ a + k M b m − ĝγ s a

(from ∂x̂ⱼ/∂xᵢ = s (δᵢⱼ − 1/M − x̂ᵢ x̂ⱼ/M) and ∂s/∂xᵢ = −s² x̂ᵢ/M). ``tests/test_conv_layers.py``
checks both derivatives against finite differences (``gradcheck``, ``gradgradcheck``) and
against PyTorch's BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_DIMS = (0, 2, 3)  # the reduced dimensions of (N, C, H, W)


def _per_channel(t: Tensor) -> Tensor:
    """A ``(C,)`` tensor shaped to broadcast over ``(N, C, H, W)``."""
    return t.view(1, -1, 1, 1)


class _BatchNormBackward(torch.autograd.Function):
    """``(gy, x, γ) -> (gx, gγ, gβ)``, ATen's kernel; its own backward is the module's formula."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, mean: Tensor, invstd: Tensor,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, weight, None, None, mean, invstd, True, eps, [True, True, True]
        )
        ctx.save_for_backward(grad_out, x, weight, mean, invstd)
        ctx.set_materialize_grads(False)
        return grad_x, grad_weight, grad_bias

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, gg_x: Tensor | None, gg_weight: Tensor | None, gg_bias: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        grad_out, x, weight, mean, s = ctx.saved_tensors
        m_count = x.numel() // x.shape[1]
        x_hat = (x - _per_channel(mean)) * _per_channel(s)
        a = grad_out.sum(_DIMS) / m_count
        b = (grad_out * x_hat).sum(_DIMS) / m_count
        zero = torch.zeros_like(weight)
        gg_weight = zero if gg_weight is None else gg_weight
        gg_bias = zero if gg_bias is None else gg_bias
        ws = weight * s
        if gg_x is None:  # only the parameter gradients were used
            s1 = s2 = m = zero
            d_grad_out = x_hat * _per_channel(gg_weight) + _per_channel(gg_bias)
        else:
            s2 = (gg_x * x_hat).sum(_DIMS)
            m = gg_x.sum(_DIMS) / m_count
            s1 = (gg_x * grad_out).sum(_DIMS) - a * m * m_count
            d_grad_out = (
                gg_x * _per_channel(ws)
                + x_hat * _per_channel(gg_weight - ws * s2 / m_count)
                + _per_channel(gg_bias - ws * m)
            )
        d_weight = s * (s1 - b * s2)
        k = ws * s / m_count
        big_b = m_count * b
        d_x = (
            x_hat * _per_channel(-k * s1 + 3.0 * k * b * s2 - gg_weight * s * b)
            + grad_out * _per_channel(gg_weight * s - k * s2)
            + _per_channel(k * s2 * a + k * big_b * m - gg_weight * s * a)
        )
        if gg_x is not None:
            d_x = d_x - gg_x * _per_channel(k * big_b)
        return d_grad_out, d_x, d_weight, None, None, None


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float
    ) -> Tensor:
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, None, None, True, 0.0, eps
        )
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = _BatchNormBackward.apply(
            grad_out, x, weight, mean, invstd, ctx.eps
        )
        return grad_x, grad_weight, grad_bias, None


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` with the fused
    double backward of this module.

    Args:
        x: ``(N, C, H, W)``.
        weight, bias: ``(C,)``.
        eps: added to the variance.
    """
    return _BatchNorm.apply(x, weight, bias, eps)
