"""Models of the supervised experiments."""

from __future__ import annotations

from torch import Tensor, nn

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


BN_MLP_HIDDEN = (256, 128, 64, 64)
"""Hidden widths of the fully connected classifier of the feature-analysis study."""


def bn_mlp(
    in_features: int,
    hidden_sizes: list[int] | tuple[int, ...],
    n_out: int,
    running_statistics: bool = False,
) -> nn.Sequential:
    """A fully connected classifier, ``in → hidden... → n_out``, each hidden layer a Linear,
    then BatchNorm, then ReLU (784-256-128-64-64-10 in the feature-analysis study).

    The input ``(..., C, H, W)`` is flattened. BatchNorm's ε is 1e-3 (Keras's and the MAML
    code's).

    Args:
        running_statistics: standard training: BatchNorm keeps running statistics (momentum
            0.01, i.e. Keras's 0.99) for evaluation. Off (MAML): every batch is normalised
            with its own statistics, always (the MAML paper's BatchNorm).
    """
    layers: list[nn.Module] = [nn.Flatten(start_dim=-3)]
    width = in_features
    for size in hidden_sizes:
        layers += [
            nn.Linear(width, size),
            nn.BatchNorm1d(size, eps=1e-3, momentum=0.01, track_running_stats=running_statistics),
            nn.ReLU(),
        ]
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class SpatialMean(nn.Module):
    """``(..., C, H, W) -> (..., C)``: the mean over space (Conv-4's last feature map)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def conv4_sequential(
    n_out: int, in_channels: int = 1, filters: int = 64, running_statistics: bool = False
) -> nn.Sequential:
    """The Omniglot Conv-4 (:class:`~metarl.supervised.conv4.Conv4` with ``downsample="stride"``)
    as plain torch layers, for ordinary training and for feature analysis: four blocks of a 3×3
    stride-2 convolution, BatchNorm (ε 1e-5) and ReLU, the mean over space, then a linear head.

    Layer ``3i`` is block ``i``'s convolution, ``3i + 1`` its BatchNorm, ``13`` the head: the
    same parameters as Conv4's ``blocks.i.conv``, ``blocks.i.bn`` and ``head``
    (:func:`conv4_parameter_name`).

    Args:
        running_statistics: ordinary training keeps running statistics (PyTorch's momentum 0.1)
            for evaluation; off, every batch is normalised with its own statistics.
    """
    layers: list[nn.Module] = []
    channels = [in_channels, filters, filters, filters, filters]
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
            nn.BatchNorm2d(c_out, track_running_stats=running_statistics),
            nn.ReLU(),
        ]
    layers += [SpatialMean(), nn.Linear(filters, n_out)]
    return nn.Sequential(*layers)


def conv4_parameter_name(name: str) -> str:
    """Conv4's parameter name as :func:`conv4_sequential` names it (``blocks.2.bn.weight`` →
    ``7.weight``, ``head.bias`` → ``13.bias``)."""
    parts = name.split(".")
    if parts[0] == "head":
        return f"13.{parts[-1]}"
    offset = {"conv": 0, "bn": 1}[parts[2]]
    return f"{3 * int(parts[1]) + offset}.{parts[-1]}"
