"""Conv-4, the few-shot image classifier of the MAML paper, task-batch aware."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.core.conv import BatchNorm2d, Conv2d, MaxPool2d
from metarl.core.layers import Linear

Downsample = Literal["stride", "maxpool"]


class ConvBlock(nn.Module):
    """3×3 convolution → BatchNorm → ReLU (→ 2×2 max-pool), task-batch aware."""

    def __init__(self, in_channels: int, out_channels: int, downsample: Downsample) -> None:
        super().__init__()
        stride = 2 if downsample == "stride" else 1
        self.conv = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn = BatchNorm2d(out_channels)
        self.pool = MaxPool2d(2) if downsample == "maxpool" else None

    def forward(self, x: Tensor, stats_count: int | None = None) -> Tensor:
        x = F.relu(self.bn(self.conv(x), stats_count))
        return x if self.pool is None else self.pool(x)


class Conv4(nn.Module):
    """The MAML paper's few-shot classifier (after Vinyals et al. 2016): 4 conv blocks + linear.

    Each block is a 3×3 convolution with ``filters`` channels, BatchNorm (batch statistics) and
    ReLU, and halves the resolution: by a stride-2 convolution (``downsample="stride"``, the
    paper's Omniglot network) or by 2×2 max-pooling (``"maxpool"``, its MiniImageNet network).
    As in the original code, the stride network averages the last feature map over space
    (64 features) and the max-pool network flattens it (``filters·(size/16)²``).

    Args:
        n_classes: N of N-way.
        in_channels: 1 (Omniglot, MNIST) or 3 (colour images).
        image_size: side of the square input images.
        filters: channels of every block (64; the paper used 32 on MiniImageNet).
        downsample: ``"stride"`` or ``"maxpool"``.

    ``forward(x, reference=None, features_only=False)``: ``x (N, C, H, W)`` or, with
    task-batched parameters, ``(n_tasks, N, C, H, W)`` -> logits ``(..., N, n_classes)``, or
    with ``features_only`` the head's input ``(..., N, features)``. With ``reference`` (images
    of the same layout, e.g. the support set), every BatchNorm normalises ``x`` with the
    statistics of ``reference`` instead of those of ``x`` (the non-transductive ``bn_policy``).
    The head is the linear layer ``head`` (``head.weight``, ``head.bias``).
    """

    native_task_batch = True

    def __init__(
        self,
        n_classes: int,
        in_channels: int = 1,
        image_size: int = 28,
        filters: int = 64,
        downsample: Downsample = "stride",
    ) -> None:
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be 'stride' or 'maxpool', got {downsample!r}")
        channels = [in_channels, filters, filters, filters, filters]
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, downsample) for c_in, c_out in zip(channels, channels[1:])
        )
        self.downsample = downsample
        side = image_size
        for _ in range(4):
            side = (side + 1) // 2 if downsample == "stride" else side // 2
        if side < 1:
            raise ValueError(f"images of side {image_size} are too small for 4 blocks")
        features = filters if downsample == "stride" else filters * side * side
        self.head = Linear(features, n_classes)

    def forward(
        self, x: Tensor, reference: Tensor | None = None, features_only: bool = False
    ) -> Tensor:
        stats_count = None
        if reference is not None:
            # One pass over [reference, x]: BatchNorm takes its statistics from the first
            # `stats_count` samples; the reference's own outputs are dropped at the end.
            stats_count = reference.shape[-4]
            x = torch.cat([reference, x], dim=-4)
        for block in self.blocks:
            x = block(x, stats_count)
        features = x.mean(dim=(-2, -1)) if self.downsample == "stride" else x.flatten(-3)
        out = features if features_only else self.head(features)
        return out if stats_count is None else out[..., stats_count:, :]
