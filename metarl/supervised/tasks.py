"""Per-task losses and scores of the supervised experiments: ``(n_tasks, N, ...) -> (n_tasks,)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def mse_per_task(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of each task: ``(n_tasks, N, ...)`` -> ``(n_tasks,)``."""
    return (predictions - targets).pow(2).mean(dim=tuple(range(1, predictions.dim())))


def cross_entropy_per_task(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of each task: logits ``(n_tasks, N, C)``, labels ``(n_tasks, N)``."""
    n_tasks, n, n_classes = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, n_classes), labels.reshape(-1), reduction="none")
    return losses.view(n_tasks, n).mean(dim=1)


def accuracy_per_task(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct predictions per task: ``(n_tasks, N, C), (n_tasks, N) -> (n_tasks,)``."""
    return (logits.argmax(dim=-1) == labels).float().mean(dim=1)
