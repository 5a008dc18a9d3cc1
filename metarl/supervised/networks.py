"""Which network a classification config's ``network`` names.

Conv-4 and the BatchNorm MLP come with metarl. :func:`register_network` adds a network of your
own under a name, and then ``network: NAME`` meta-trains, evaluates and loads it as it does the
built-in ones; on the command line, ``--import`` the code that registers it first (``metarl
--import mynet.py train omniglot-5w1s --set network=NAME``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metarl.config import ConfigError

NetworkBuilder = Callable[[tuple[int, int, int], int], nn.Module]
"""``(input_shape, n_outputs) -> model``: ``input_shape`` is one image's ``(C, H, W)``; the
model maps images ``(B, C, H, W)`` to logits ``(B, n_outputs)``."""

BUILT_IN: tuple[str, ...] = ("conv4", "mlp")
"""The networks that come with metarl (built by the experiment itself)."""

_REGISTERED: dict[str, NetworkBuilder] = {}


def register_network(name: str, build: NetworkBuilder) -> None:
    """Make a network of your own available as ``network: NAME`` in classification configs.

    Any ``nn.Module`` works: metarl runs it functionally, all tasks of a meta-batch at once
    with ``torch.func.vmap``. BatchNorm layers must not keep running statistics
    (``track_running_stats=False``: every batch is normalised by itself, as in the paper).
    The initial weights are drawn under the config's ``seed``, so a run is reproducible.
    Before a run starts, the built network is checked (:func:`build_registered`): a builder
    that fails or breaks these rules is one line naming the rule.

    Args:
        name: the config value (a new one; the built-in names cannot be replaced).
        build: ``(input_shape (C, H, W), n_outputs) -> nn.Module`` (:data:`NetworkBuilder`).

    Raises:
        ValueError: ``name`` is a built-in network.
    """
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in network")
    _REGISTERED[name] = build


def network_names() -> list[str]:
    """Every name ``network`` accepts: the built-in ones and those registered since."""
    return [*BUILT_IN, *sorted(_REGISTERED)]


def build_registered(name: str, input_shape: tuple[int, int, int], n_outputs: int) -> nn.Module:
    """The network registered as ``name``, built and checked: an ``nn.Module`` with parameters,
    BatchNorm without running statistics, and logits ``(B, n_outputs)`` for images
    ``(B, *input_shape)``.

    Raises:
        ConfigError: the builder failed, or built a network that breaks one of those rules
            (one line naming it: the user's code, not metarl, needs the fix).
    """
    said = f"network {name!r} (your register_network builder)"
    try:
        model = _REGISTERED[name](input_shape, n_outputs)
    except Exception as e:  # noqa: BLE001 - the user's code: name it, in one line
        raise ConfigError(f"{said} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise ConfigError(f"{said} returned {type(model).__name__}, not an nn.Module with "
                          "parameters")  # fmt: skip
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    running = [type(m).__name__ for m in model.modules()
               if isinstance(m, norms) and m.track_running_stats]  # fmt: skip
    if running:
        raise ConfigError(f"{said} has {running[0]} with running statistics; MAML normalises "
                          "every batch by itself: pass track_running_stats=False")  # fmt: skip
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, *input_shape))
    except Exception as e:  # noqa: BLE001 - as above
        raise ConfigError(f"{said} failed on images (2, {', '.join(map(str, input_shape))}): "
                          f"{type(e).__name__}: {e}") from None  # fmt: skip
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, n_outputs):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"{said} maps images (2, {', '.join(map(str, input_shape))}) to "
                          f"{shape}; the classifier needs logits (2, {n_outputs})")  # fmt: skip
    return model


def registered_network(name: str) -> NetworkBuilder:
    """The builder registered as ``name``.

    Raises:
        KeyError: no network was registered under ``name``.
    """
    return _REGISTERED[name]
