"""What a supervised task batch looks like, and the per-task losses."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class TaskBatch(NamedTuple):
    """A meta-batch of few-shot tasks; every tensor has the task dimension first.

    Shapes: ``support_x (n_tasks, K, *input)``, ``support_y (n_tasks, K, *target)``,
    ``query_x (n_tasks, Q, *input)``, ``query_y (n_tasks, Q, *target)``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device, non_blocking=True) for t in self))

    def with_shots(self, k: int) -> TaskBatch:
        """The same tasks with only the first ``k`` support examples."""
        return self._replace(support_x=self.support_x[:, :k], support_y=self.support_y[:, :k])


def mse_per_task(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of each task: ``(n_tasks, N, ...)`` -> ``(n_tasks,)``."""
    return (predictions - targets).pow(2).mean(dim=tuple(range(1, predictions.dim())))


def cross_entropy_per_task(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of each task: logits ``(n_tasks, N, C)``, labels ``(n_tasks, N)``."""
    n_tasks, n, n_classes = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, n_classes), labels.reshape(-1), reduction="none")
    return losses.view(n_tasks, n).mean(dim=1)
