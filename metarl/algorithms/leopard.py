"""LEOPARD's task-conditioned softmax head (Bansal et al., EMNLP 2020) on the image benchmarks.

A generator maps each class's mean support feature to that class's output weights and bias
(:class:`~metarl.algorithms.heads.GeneratedHead`); the task then adapts from there with
per-layer, per-step learnable step sizes, and the generator is meta-learned with θ. LEOPARD's
own benchmarks are NLP tasks on a pretrained BERT encoder, which cannot be fetched here; on the
image benchmarks the encoder is the meta-learned Conv-4.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metarl.algorithms.base import OwnSettings, require_inner_steps
from metarl.algorithms.heads import HEAD, GeneratedHead, check_model
from metarl.algorithms.maml import MAML, step_size_from_config

LABEL = "LEOPARD"
"""How tables and plots name the algorithm."""


OWN_SETTINGS = OwnSettings(
    learn_inner_lr="one meta-learned α per parameter tensor and inner step",
    needs_inner_steps=True,
)
"""The shared config settings this algorithm decides itself (:class:`OwnSettings`)."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """LEOPARD with a config's inner loop; the model needs a linear ``head`` (Conv-4)."""
    check_model(model)
    require_inner_steps(config.inner_steps, "LEOPARD")  # the generated head is adapted
    features = dict(model.named_parameters())[HEAD[0]].shape[1]
    return MAML(
        step_size_from_config(config, model, granularity="tensor", per_step=True),
        config.inner_steps, config.meta_gradient, config.fd_epsilon,
        head=GeneratedHead(features, seed=config.seed),
    )  # fmt: skip
