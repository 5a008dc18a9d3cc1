"""Supervised meta-learning algorithms behind one interface (:class:`MetaAlgorithm`).

Each algorithm is one module with a ``from_config(config, model)`` constructor, a ``LABEL`` for
tables and plots and, if it decides some shared settings itself, an ``OWN_SETTINGS``; it is
registered in ``_MODULES`` under the name that the config key ``algorithm`` takes, from which
:data:`ALGORITHMS`, :data:`LABELS` and :data:`OWN_SETTINGS_BY_ALGORITHM` are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metarl.algorithms import (
    anil,
    imaml,
    leopard,
    maml,
    maml_plus_plus,
    meta_sgd,
    proto_maml,
    reptile,
)
from metarl.algorithms.base import MetaAlgorithm, MetaLoss, OwnSettings, Problem, StepSizes

_MODULES = {
    "maml": maml, "anil": anil, "meta_sgd": meta_sgd, "maml_plus_plus": maml_plus_plus,
    "proto_maml": proto_maml, "leopard": leopard, "reptile": reptile, "imaml": imaml,
}  # fmt: skip

ALGORITHMS: dict[str, Callable[[Any, nn.Module], MetaAlgorithm]] = {
    name: module.from_config for name, module in _MODULES.items()
}
"""Algorithm name -> constructor from a supervised config and the model it meta-learns."""

OWN_SETTINGS_BY_ALGORITHM: dict[str, OwnSettings] = {
    name: getattr(module, "OWN_SETTINGS", OwnSettings()) for name, module in _MODULES.items()
}
"""Algorithm name -> the shared settings it decides itself (its module's ``OWN_SETTINGS``;
none when the module declares none)."""

LABELS: dict[str, str] = {name: module.LABEL for name, module in _MODULES.items()}
"""Algorithm name -> how tables and plots name it (its module's ``LABEL``)."""


def make_algorithm(config: Any, model: nn.Module) -> MetaAlgorithm:
    """The algorithm ``config.algorithm`` names, set up for ``model``.

    Raises:
        ConfigError: the algorithm cannot work with this model (e.g. ProtoMAML without a head).
    """
    from metarl.config import ConfigError

    try:
        return ALGORITHMS[config.algorithm](config, model)
    except ValueError as e:
        raise ConfigError(f"algorithm: {config.algorithm}: {e}") from None


__all__ = [
    "ALGORITHMS",
    "LABELS",
    "MetaAlgorithm",
    "MetaLoss",
    "OWN_SETTINGS_BY_ALGORITHM",
    "OwnSettings",
    "Problem",
    "StepSizes",
    "make_algorithm",
]
