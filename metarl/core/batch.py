"""A meta-batch of supervised tasks: support and query sets, the task dimension first."""

from __future__ import annotations

from typing import NamedTuple

import torch
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

    @property
    def n_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device, non_blocking=True) for t in self))

    def with_shots(self, k: int) -> TaskBatch:
        """The same tasks with only the first ``k`` support examples."""
        return self._replace(support_x=self.support_x[:, :k], support_y=self.support_y[:, :k])

    def tasks(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start..stop-1`` (views)."""
        return TaskBatch(*(t[start:stop] for t in self))
