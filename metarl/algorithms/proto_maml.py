"""ProtoMAML (Triantafillou et al., "Meta-Dataset", ICLR 2020): MAML whose output layer starts,
for every task, from the prototypical network's head built from its support set
(:class:`~metarl.algorithms.heads.PrototypeHead`), then adapts as usual; the meta-gradient flows
through that initialisation into the feature extractor. The paper adapts with first-order MAML
(``meta_gradient: first_order``); any mode works here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metarl.algorithms.heads import PrototypeHead, check_model
from metarl.algorithms.maml import MAML, step_size_from_config

LABEL = "ProtoMAML"
"""How tables and plots name the algorithm."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """ProtoMAML with a config's inner loop; the model needs a linear ``head`` (Conv-4)."""
    check_model(model)
    return MAML(
        step_size_from_config(config, model), config.inner_steps, config.meta_gradient,
        config.fd_epsilon, head=PrototypeHead(),
    )  # fmt: skip
