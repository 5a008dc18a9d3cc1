"""Inner-loop step sizes: a constant, a per-step schedule, or learnable tensors.

MAML uses one fixed α. MAML++ learns one α per parameter tensor and per step, Meta-SGD one α
per parameter *element*. All three are the same object here, so algorithms differ only in how
they construct it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Granularity = Literal["global", "tensor", "element"]


class InnerStepSize(nn.Module):
    """Step size α_k(name) for inner step ``k`` and parameter ``name``.

    Args:
        init: α for every step (a float), or one α per step (a sequence; steps past its end
            reuse the last value).
        params: the parameters to adapt (only their names and shapes are read); required when
            ``learnable`` is set.
        learnable: make α a trainable tensor (meta-learned by the outer optimiser).
        granularity: with ``learnable``: ``"global"`` one α per step, ``"tensor"`` one per
            parameter tensor and step (MAML++), ``"element"`` one per parameter element and
            step (Meta-SGD).
    """

    def __init__(
        self,
        init: float | Sequence[float],
        params: dict[str, Tensor] | None = None,
        learnable: bool = False,
        granularity: Granularity = "global",
    ) -> None:
        super().__init__()
        schedule = [float(init)] if isinstance(init, (int, float)) else [float(a) for a in init]
        if not schedule:
            raise ValueError("the step-size schedule is empty")
        if any(not a == a or a < 0 for a in schedule):  # `a == a` is False for NaN
            raise ValueError(f"inner step sizes must be finite and >= 0, got {schedule}")
        if granularity not in ("global", "tensor", "element"):
            raise ValueError(f"granularity must be global, tensor or element, got {granularity!r}")
        self.schedule = schedule
        self.learnable = learnable
        self.granularity: Granularity = granularity
        self.values = nn.ParameterDict()
        if learnable:
            if granularity != "global" and params is None:
                raise ValueError("a per-tensor or per-element learnable step size needs `params`")
            for k, alpha in enumerate(schedule):
                if granularity == "global":
                    self.values[f"step{k}"] = nn.Parameter(torch.tensor(alpha))
                    continue
                assert params is not None
                for name, p in params.items():
                    shape = p.shape if granularity == "element" else ()
                    key = f"step{k}:{name.replace('.', '/')}"
                    self.values[key] = nn.Parameter(torch.full(shape, alpha))

    def forward(self, step: int, name: str) -> float | Tensor:
        """α for inner step ``step`` (0-based) and the parameter called ``name``."""
        k = min(step, len(self.schedule) - 1)
        if not self.learnable:
            return self.schedule[k]
        if self.granularity == "global":
            return self.values[f"step{k}"]
        return self.values[f"step{k}:{name.replace('.', '/')}"]

    def extra_repr(self) -> str:
        return f"schedule={self.schedule}, learnable={self.learnable}, {self.granularity}"


def as_step_size(step_size: float | Sequence[float] | InnerStepSize) -> InnerStepSize:
    """Accept a plain float or schedule wherever an :class:`InnerStepSize` is expected."""
    if isinstance(step_size, InnerStepSize):
        return step_size
    return InnerStepSize(step_size)
