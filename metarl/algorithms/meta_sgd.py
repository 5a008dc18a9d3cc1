"""Meta-SGD (Li, Zhou, Chen & Li, 2017): the inner step size is a vector as large as θ, its
direction and size meta-learned with θ: ``θ' = θ − α ∘ ∇L_support(θ)``.

MAML's inner loop with an element-wise learnable :class:`~metarl.core.InnerStepSize`. The paper
initialises α uniformly in [0.005, 0.1]; here every entry starts at ``inner_lr``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metarl.algorithms.maml import MAML, step_size_from_config


def from_config(config: Any, model: nn.Module) -> MAML:
    """Meta-SGD: MAML with ``learn_inner_lr=element`` (whatever the config says)."""
    return MAML(
        step_size_from_config(config, model, granularity="element"), config.inner_steps,
        config.meta_gradient, config.fd_epsilon,
    )  # fmt: skip
