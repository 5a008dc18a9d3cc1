"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019), switch by switch.

* **MSL**, multi-step loss: the outer loss is a weighted sum of the query losses after every
  inner step; the weights start uniform and anneal towards the last step over
  ``msl_iterations`` iterations (:func:`msl_weights`, the schedule of the authors' code), after
  which only the last step counts (MAML's loss). ``msl_iterations: 0`` turns it off.
* **DOA**, derivative-order annealing: first-order meta-gradients for the first
  ``doa_iterations`` iterations, second order after.
* **LSLR**, per-layer per-step learnable step sizes: one α per parameter tensor and inner step.
* **BNWB**, per-step BatchNorm weights and biases (``bn_per_step_weights``): inner step ``k``
  and the query loss after it use their own meta-learned BatchNorm scale and shift
  (:class:`PerStepBatchNorm`); the inner loop does not adapt them.
* **CA**, cosine annealing of the meta learning rate: ``meta_lr_schedule: cosine`` (a trainer
  setting any algorithm can use).

Not here: per-step BatchNorm running statistics (BNRS). metarl's Conv-4 normalises with batch
statistics, the MAML paper's (transductive) BatchNorm, so running statistics would not change a
prediction; so it is in learn2learn's ``MetaBatchNorm`` (after the authors' code), which keeps
per-step running statistics but always normalises with ``training=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metarl.algorithms.base import OwnSettings, require_inner_steps
from metarl.algorithms.maml import MAML, step_size_from_config
from metarl.core import MetaGradientMode, Params
from metarl.core.conv import BatchNorm2d

NORMALIZATIONS = (BatchNorm2d, nn.modules.batchnorm._BatchNorm)


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


class PerStepBatchNorm(nn.Module):
    """BNWB: one BatchNorm scale and shift per inner step, meta-learned.

    Step 0 uses the model's own BatchNorm weights (so the model alone is the step-0 network);
    steps ``1..steps−1`` use copies held here, initialised from the model's.

    Args:
        model: the network; the parameters of its BatchNorm layers become per-step.
        steps: inner steps of meta-training.

    ``forward(step, n_tasks)`` -> ``{name: (n_tasks, *shape)}``: the BatchNorm parameters of
    inner step ``step`` (none for step 0: the model's own stay).
    """

    def __init__(self, model: nn.Module, steps: int) -> None:
        super().__init__()
        own = {
            f"{prefix}.{name}" if prefix else name: p.detach()
            for prefix, module in model.named_modules()
            if isinstance(module, NORMALIZATIONS)
            for name, p in module.named_parameters(recurse=False)
        }
        if not own:
            raise ValueError(
                f"bn_per_step_weights: {type(model).__name__} has no BatchNorm parameters"
            )
        self.names = frozenset(own)
        # A ParameterDict key cannot contain dots; one (steps − 1, *shape) tensor per parameter.
        self.later_steps = nn.ParameterDict({
            name.replace(".", "/"): nn.Parameter(p.expand(steps - 1, *p.shape).clone())
            for name, p in own.items()
        })  # fmt: skip

    def forward(self, step: int, n_tasks: int) -> Params:
        if step == 0:
            return {}
        return {
            key.replace("/", "."): p[step - 1].expand(n_tasks, *p.shape[1:])
            for key, p in self.later_steps.items()
        }


LABEL = "MAML++"
"""How tables and plots name the algorithm."""


OWN_SETTINGS = OwnSettings(
    learn_inner_lr="one meta-learned α per parameter tensor and inner step",
    needs_inner_steps=True,
)
"""The shared config settings this algorithm decides itself (:class:`OwnSettings`)."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """MAML++ with a config's inner loop, LSLR, MSL (``msl_iterations``), DOA
    (``doa_iterations``) and BNWB (``bn_per_step_weights``)."""
    steps = config.inner_steps
    require_inner_steps(steps, "MAML++")  # its per-step step sizes and weights need a step
    # A model without BatchNorm (the sinusoid MLP) has nothing to make per-step.
    has_norm = any(isinstance(m, NORMALIZATIONS) for m in model.modules())
    use_bnwb = config.bn_per_step_weights and has_norm
    per_step = PerStepBatchNorm(model, steps) if use_bnwb else None
    return MAML(
        step_size_from_config(config, model, granularity="tensor", per_step=True), steps,
        config.meta_gradient, config.fd_epsilon,
        step_weights=lambda iteration: msl_weights(iteration, steps, config.msl_iterations),
        mode_at=mode_schedule(config), per_step=per_step,
    )  # fmt: skip
