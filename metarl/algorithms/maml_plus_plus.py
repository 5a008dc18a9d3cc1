"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019), switch by switch.

* **MSL**, multi-step loss: the outer loss is a weighted sum of the query losses after every
  inner step; the weights start uniform and anneal towards the last step over
  ``msl_iterations`` iterations (:func:`msl_weights`, the schedule of the authors' code), after
  which only the last step counts (MAML's loss). ``msl_iterations: 0`` turns it off.
* **DOA**, derivative-order annealing: first-order meta-gradients for the first
  ``doa_iterations`` iterations, second order after.
* **LSLR**, per-layer per-step learnable step sizes: one α per parameter tensor and inner step.
* **CA**, cosine annealing of the meta learning rate: ``meta_lr_schedule: cosine`` (a trainer
  setting any algorithm can use).

Not here yet: per-step BatchNorm weights and running statistics (BNWB, BNRS); metarl's Conv-4
normalises with batch statistics, the MAML paper's (transductive) BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metarl.algorithms.maml import MAML, step_size_from_config
from metarl.core import MetaGradientMode


def msl_weights(iteration: int, steps: int, anneal_iterations: int) -> list[float]:
    """Weights of the query losses after inner steps 1..K at ``iteration``.

    Uniform ``1/K`` at first; each earlier step's weight decays linearly by ``1/K`` over
    ``anneal_iterations`` down to a floor of ``0.03/K`` while the last one grows (capped at
    ``1 − (K−1)·0.03/K``); from ``anneal_iterations`` on, only the last step counts.
    """
    if anneal_iterations <= 0 or iteration >= anneal_iterations or steps == 1:
        return [0.0] * (steps - 1) + [1.0]
    decay = 1.0 / steps / anneal_iterations
    floor = 0.03 / steps
    earlier = [max(1.0 / steps - iteration * decay, floor) for _ in range(steps - 1)]
    last = min(1.0 / steps + iteration * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return [*earlier, last]


def mode_schedule(config: Any) -> Callable[[int], MetaGradientMode]:
    """DOA: first order before ``doa_iterations``, the config's mode after."""
    return lambda iteration: (
        "first_order" if iteration < config.doa_iterations else config.meta_gradient
    )


def from_config(config: Any, model: nn.Module) -> MAML:
    """MAML++ with a config's inner loop, LSLR, MSL (``msl_iterations``) and DOA
    (``doa_iterations``)."""
    steps = config.inner_steps
    return MAML(
        step_size_from_config(config, model, granularity="tensor", per_step=True), steps,
        config.meta_gradient, config.fd_epsilon,
        step_weights=lambda iteration: msl_weights(iteration, steps, config.msl_iterations),
        mode_at=mode_schedule(config),
    )  # fmt: skip
