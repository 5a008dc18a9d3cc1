"""Models of the supervised experiments."""

from __future__ import annotations

from metarl.core.layers import MLP


def sinusoid_mlp(hidden_sizes: list[int], activation: str = "relu", inputs: int = 1) -> MLP:
    """The paper's regressor: ``inputs -> hidden... -> 1`` (1-40-40-1 ReLU by default)."""
    return MLP((inputs, *hidden_sizes, 1), activation)
