"""Which network a classification config's ``network`` names.

Conv-4 and the BatchNorm MLP come with metarl. :func:`register_network` adds a network of your
own under a name, and then ``network: NAME`` meta-trains, evaluates and loads it as it does the
built-in ones; on the command line, ``--import`` the code that registers it first (``metarl
--import mynet.py train omniglot-5w1s --set network=NAME``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

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


def registered_network(name: str) -> NetworkBuilder:
    """The builder registered as ``name``.

    Raises:
        KeyError: no network was registered under ``name``.
    """
    return _REGISTERED[name]
