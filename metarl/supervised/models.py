"""Models of the supervised experiments."""

from __future__ import annotations

from torch import nn

from metarl.core.layers import MLP

INITS = ("torch", "paper")
"""Initialisations of the regressor: PyTorch's default for ``nn.Linear`` (Kaiming-uniform
weights and biases), or the MAML paper's code (weights from a normal with σ = 0.01 truncated at
2σ, zero biases)."""


def sinusoid_mlp(
    hidden_sizes: list[int], activation: str = "relu", inputs: int = 1, init: str = "torch"
) -> MLP:
    """The paper's regressor: ``inputs -> hidden... -> 1`` (1-40-40-1 ReLU by default).

    Args:
        init: ``torch`` or ``paper`` (:data:`INITS`); draws from torch's global generator, so
            build it under :func:`metarl.seeding.seeded`.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    model = MLP((inputs, *hidden_sizes, 1), activation)
    if init == "paper":
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-0.02, b=0.02)
                nn.init.zeros_(module.bias)
    return model
