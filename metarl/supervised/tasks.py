"""Per-task losses and scores of the supervised experiments: ``(n_tasks, N, ...) -> (n_tasks,)``."""

from __future__ import annotations

import torch
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


def episode_ways(labels: Tensor) -> Tensor:
    """``(n_tasks,)`` each task's number of classes, its largest label + 1 (a Meta-Dataset
    episode's labels are ``0..N−1``, each present in the query set)."""
    return labels.amax(dim=1) + 1


def mask_absent_classes(logits: Tensor, labels: Tensor) -> Tensor:
    """``logits (n_tasks, N, C)`` with the classes a task does not have (label ≥ its ways) at
    −inf: a classifier with ``C = max_ways`` outputs on episodes of fewer ways."""
    absent = torch.arange(logits.shape[-1], device=logits.device) >= episode_ways(labels)[:, None]
    return logits.masked_fill(absent[:, None, :], float("-inf"))


def variable_way_cross_entropy_per_task(logits: Tensor, labels: Tensor) -> Tensor:
    """:func:`cross_entropy_per_task` over each task's own classes only."""
    return cross_entropy_per_task(mask_absent_classes(logits, labels), labels)


def variable_way_accuracy_per_task(logits: Tensor, labels: Tensor) -> Tensor:
    """:func:`accuracy_per_task` with the prediction among each task's own classes."""
    return accuracy_per_task(mask_absent_classes(logits, labels), labels)
