"""Sinusoid regression tasks (Finn et al. 2017, Sec. 5.1): y = A sin(x − φ)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from metarl.core import TaskBatch


class SinusoidTaskParams(NamedTuple):
    """Amplitude and phase of each task, both ``(n_tasks,)``."""

    amplitude: Tensor
    phase: Tensor


class SinusoidTasks:
    """Distribution over sinusoids and the points sampled from them.

    Args:
        amplitude_range: ``(low, high)`` of A ~ U.
        phase_range: ``(low, high)`` of φ ~ U, radians.
        input_range: ``(low, high)`` of x ~ U.
    """

    def __init__(
        self,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, torch.pi),
        input_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.amplitude_range = tuple(amplitude_range)
        self.phase_range = tuple(phase_range)
        self.input_range = tuple(input_range)

    @staticmethod
    def _uniform(shape: tuple[int, ...], bounds: tuple[float, ...], gen: torch.Generator) -> Tensor:
        low, high = bounds
        return torch.rand(shape, generator=gen) * (high - low) + low

    def sample_params(self, n_tasks: int, generator: torch.Generator) -> SinusoidTaskParams:
        """Draw ``n_tasks`` amplitudes and phases."""
        return SinusoidTaskParams(
            self._uniform((n_tasks,), self.amplitude_range, generator),
            self._uniform((n_tasks,), self.phase_range, generator),
        )

    def sample_inputs(self, n_tasks: int, n_points: int, generator: torch.Generator) -> Tensor:
        """``(n_tasks, n_points, 1)`` inputs drawn uniformly from ``input_range``."""
        return self._uniform((n_tasks, n_points, 1), self.input_range, generator)

    @staticmethod
    def targets(params: SinusoidTaskParams, x: Tensor) -> Tensor:
        """y = A sin(x − φ) for inputs ``x (n_tasks, N, 1)``."""
        return params.amplitude.view(-1, 1, 1) * torch.sin(x - params.phase.view(-1, 1, 1))

    def sample(
        self, n_tasks: int, k_support: int, k_query: int, generator: torch.Generator
    ) -> tuple[TaskBatch, SinusoidTaskParams]:
        """A task batch with ``k_support`` support and ``k_query`` query points per task."""
        params = self.sample_params(n_tasks, generator)
        support_x = self.sample_inputs(n_tasks, k_support, generator)
        query_x = self.sample_inputs(n_tasks, k_query, generator)
        batch = TaskBatch(
            support_x, self.targets(params, support_x), query_x, self.targets(params, query_x)
        )
        return batch, params


def oracle_inputs(x: Tensor, params: SinusoidTaskParams) -> Tensor:
    """Inputs of the oracle regressor: ``(n_tasks, N, 3)`` = [x, A, φ] at every point."""
    n_tasks, n_points, _ = x.shape
    amp = params.amplitude.view(-1, 1, 1).expand(n_tasks, n_points, 1)
    phase = params.phase.view(-1, 1, 1).expand(n_tasks, n_points, 1)
    return torch.cat([x, amp.to(x), phase.to(x)], dim=-1)
