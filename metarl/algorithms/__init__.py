"""Supervised meta-learning algorithms behind one interface (:class:`MetaAlgorithm`).

Each algorithm is one module with a ``from_config(config, model)`` constructor, registered in
:data:`ALGORITHMS` under the name that the config key ``algorithm`` takes.
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
from metarl.algorithms.base import MetaAlgorithm, MetaLoss, Problem, StepSizes

ALGORITHMS: dict[str, Callable[[Any, nn.Module], MetaAlgorithm]] = {
    "maml": maml.from_config,
    "anil": anil.from_config,
    "meta_sgd": meta_sgd.from_config,
    "maml_plus_plus": maml_plus_plus.from_config,
    "proto_maml": proto_maml.from_config,
    "leopard": leopard.from_config,
    "reptile": reptile.from_config,
    "imaml": imaml.from_config,
}
"""Algorithm name -> constructor from a supervised config and the model it meta-learns."""

LABELS = {
    "maml": "MAML", "anil": "ANIL", "meta_sgd": "Meta-SGD", "maml_plus_plus": "MAML++",
    "proto_maml": "ProtoMAML", "leopard": "LEOPARD", "reptile": "Reptile", "imaml": "iMAML",
}  # fmt: skip
"""How tables and plots name each algorithm."""


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
    "Problem",
    "StepSizes",
    "make_algorithm",
]
