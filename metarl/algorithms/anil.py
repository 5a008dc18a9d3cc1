"""ANIL, "almost no inner loop" (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

Only the head (the last layer) adapts in the inner loop; the body is meta-learned by the outer
loop but held fixed during adaptation, at train and at test time. The result is MAML's
meta-gradient with the body's inner step size set to zero (tested), at a fraction of the inner
loop's cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metarl.algorithms.maml import MAML, step_size_from_config


def head_prefix(model: nn.Module) -> str:
    """The name prefix of the model's head: its ``head`` submodule if it has one (Conv-4),
    else the last module that holds parameters (an MLP's last linear layer)."""
    if isinstance(getattr(model, "head", None), nn.Module):
        return "head."
    owners = [name for name, m in model.named_modules() if list(m.parameters(recurse=False))]
    if not owners or owners[-1] == "":
        raise ValueError(f"{type(model).__name__} has no head layer to adapt")
    return owners[-1] + "."


def is_head(model: nn.Module) -> Callable[[str], bool]:
    """``name -> bool``: whether a parameter belongs to the model's head."""
    prefix = head_prefix(model)
    return lambda name: name.startswith(prefix)


def from_config(config: Any, model: nn.Module) -> MAML:
    """ANIL with a config's inner loop (``inner_lr``, ``inner_steps``, ``meta_gradient``...)."""
    return MAML(
        step_size_from_config(config, model), config.inner_steps, config.meta_gradient,
        config.fd_epsilon, adapted=is_head(model),
    )  # fmt: skip
