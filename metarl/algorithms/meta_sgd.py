"""Meta-SGD (Li, Zhou, Chen & Li, 2017): the inner step size is a vector as large as θ, its
direction and size meta-learned with θ: ``θ' = θ − α ∘ ∇L_support(θ)``.

MAML's inner loop with an element-wise learnable :class:`~metarl.core.InnerStepSize`, each entry
of α drawn uniformly from ``meta_sgd_init`` (the paper's [0.005, 0.1], §4), from the run's seed;
``meta_sgd_init: []`` starts every entry at ``inner_lr`` instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metarl.algorithms.base import OwnSettings
from metarl.algorithms.maml import MAML, step_size_from_config
from metarl.core import InnerStepSize


def draw_step_sizes(step_size: InnerStepSize, low: float, high: float, seed: int) -> None:
    """Set every learnable entry of ``step_size`` to a draw from U[low, high] (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, value in sorted(step_size.values.items()):  # a fixed order: the same draws
            value.copy_(low + (high - low) * torch.rand(value.shape, generator=generator))


LABEL = "Meta-SGD"
"""How tables and plots name the algorithm."""


OWN_SETTINGS = OwnSettings(
    learn_inner_lr="one meta-learned α per parameter",
)
"""The shared config settings this algorithm decides itself (:class:`OwnSettings`)."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """Meta-SGD: MAML with ``learn_inner_lr=element`` (whatever the config says), α drawn from
    ``meta_sgd_init``."""
    step_size = step_size_from_config(config, model, granularity="element")
    if config.meta_sgd_init:
        low, high = config.meta_sgd_init
        draw_step_sizes(step_size, low, high, config.seed)
    return MAML(step_size, config.inner_steps, config.meta_gradient, config.fd_epsilon)
