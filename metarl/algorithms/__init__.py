"""Supervised meta-learning algorithms behind one interface (:class:`MetaAlgorithm`).

Each algorithm is one module with a ``from_config(config, model)`` constructor, registered in
:data:`ALGORITHMS` under the name that the config key ``algorithm`` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metarl.algorithms import maml
from metarl.algorithms.base import MetaAlgorithm, MetaLoss, Problem, StepSizes

ALGORITHMS: dict[str, Callable[[Any, nn.Module], MetaAlgorithm]] = {
    "maml": maml.from_config,
}
"""Algorithm name -> constructor from a supervised config and the model it meta-learns."""


def make_algorithm(config: Any, model: nn.Module) -> MetaAlgorithm:
    """The algorithm ``config.algorithm`` names, set up for ``model``."""
    return ALGORITHMS[config.algorithm](config, model)


__all__ = ["ALGORITHMS", "MetaAlgorithm", "MetaLoss", "Problem", "StepSizes", "make_algorithm"]
