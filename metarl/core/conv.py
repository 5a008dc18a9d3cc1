"""Convolutional layers that also run a whole task batch at once.

The companions of :mod:`metarl.core.layers` for images. With ordinary parameters they behave
like their ``torch.nn`` parents. With parameters carrying a leading task dimension (as
:func:`metarl.core.functional.task_forward` passes them), inputs are ``(n_tasks, N, C, H, W)``
and every task is computed by **one** kernel: tasks are folded into the channel dimension,
``(n_tasks, N, C, H, W) -> (N, n_tasks·C, H, W)``, so that

* a convolution becomes a grouped convolution with ``groups = n_tasks`` (task t's output
  channels see only task t's input channels, through task t's filters);
* BatchNorm becomes an ordinary BatchNorm over ``n_tasks·C`` channels: its per-channel
  statistics over (N, H, W) are exactly each task's own statistics;
* max-pooling acts on each channel alone, so it needs nothing at all.

Outputs are returned as a transposed *view* of the folded result, so the next layer's fold is
free (no copy between layers). ``metarl bench --suite paper --only speed-omniglot`` compares
this with ``torch.func.vmap`` of the plain layers and with a per-task Python loop.

BatchNorm here always normalises with batch statistics (no running averages), as MAML does,
with a hand-derived double backward (:mod:`metarl.core.batch_norm`);
it can take the statistics from the first ``stats_count`` samples only (see
:class:`BatchNorm2d`), which is how a query set is normalised by its support set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.core.batch_norm import batch_norm


def fold_tasks(x: Tensor) -> Tensor:
    """``(n_tasks, N, C, H, W) -> (N, n_tasks·C, H, W)`` (a view when ``x`` came from a layer)."""
    n_tasks, n, c, h, w = x.shape
    return x.transpose(0, 1).reshape(n, n_tasks * c, h, w)


def unfold_tasks(y: Tensor, n_tasks: int) -> Tensor:
    """``(N, n_tasks·C, H, W) -> (n_tasks, N, C, H, W)``, as a view."""
    n, tc, h, w = y.shape
    return y.reshape(n, n_tasks, tc // n_tasks, h, w).transpose(0, 1)


def _check_tasks(layer: str, x: Tensor, n_tasks: int) -> None:
    if x.dim() != 5 or x.shape[0] != n_tasks:
        raise ValueError(
            f"task-batched {layer}: expected input (n_tasks={n_tasks}, N, C, H, W), "
            f"got {tuple(x.shape)}"
        )


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that accepts a task batch (zero padding only).

    Shapes:
        unbatched: ``weight (O, C/g, kh, kw)``, ``x (N, C, H, W)`` -> ``(N, O, H', W')``.
        task batch: ``weight (n_tasks, O, C/g, kh, kw)``, ``bias (n_tasks, O)``,
        ``x (n_tasks, N, C, H, W)`` -> ``(n_tasks, N, O, H', W')``, one grouped convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        # Numeric zero padding only: F.conv2d applies it per channel, so it folds with the tasks.
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        n_tasks = self.weight.shape[0]
        _check_tasks("Conv2d", x, n_tasks)
        weight = self.weight.reshape(-1, *self.weight.shape[2:])  # (n_tasks·O, C/g, kh, kw)
        bias = None if self.bias is None else self.bias.reshape(-1)
        out = F.conv2d(
            fold_tasks(x), weight, bias, self.stride, self.padding, self.dilation,
            self.groups * n_tasks,
        )  # fmt: skip
        return unfold_tasks(out, n_tasks)


class BatchNorm2d(nn.Module):
    """BatchNorm over (N, H, W) with batch statistics always (no running averages), task-aware.

    Args:
        num_features: channels C.
        eps: added to the variance.

    ``forward(x, stats_count=None)``: with ``stats_count = n`` the mean and variance are those of
    the first ``n`` samples only, and every sample is normalised with them (the support set's
    statistics applied to the query set, see ``bn_policy`` of the classification config).

    Shapes:
        unbatched: ``weight, bias (C,)``, ``x (N, C, H, W)``.
        task batch: ``weight, bias (n_tasks, C)``, ``x (n_tasks, N, C, H, W)``; statistics per
        task and channel.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor, stats_count: int | None = None) -> Tensor:
        n_tasks = self.weight.shape[0] if self.weight.dim() == 2 else None
        if n_tasks is not None:
            _check_tasks("BatchNorm2d", x, n_tasks)
        folded = x if n_tasks is None else fold_tasks(x)  # (N, channels, H, W)
        weight, bias = self.weight.reshape(-1), self.bias.reshape(-1)
        if stats_count is None:  # with the fused double backward of metarl.core.batch_norm
            out = batch_norm(folded, weight, bias, self.eps)
        else:
            var, mean = torch.var_mean(folded[:stats_count], dim=(0, 2, 3), unbiased=False)
            scale = weight * torch.rsqrt(var + self.eps)
            out = folded * scale.view(1, -1, 1, 1) + (bias - mean * scale).view(1, -1, 1, 1)
        return out if n_tasks is None else unfold_tasks(out, n_tasks)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, batch statistics"


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that also accepts ``(n_tasks, N, C, H, W)`` inputs."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            return super().forward(x)
        return unfold_tasks(super().forward(fold_tasks(x)), x.shape[0])
