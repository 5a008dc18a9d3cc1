"""The models ``metarl analyze`` compares: a trained run's network, its initialisation, and a
deterministic per-image version of each for feature analysis.

BatchNorm is what makes a network's output on one image depend on the others of its batch. To
study features image by image, every BatchNorm becomes a fixed affine map
(:class:`FrozenNorm`): a model trained with running statistics keeps them (how it is tested);
a meta-learned model, which normalises every batch with its own statistics, gets the statistics
of a reference batch of test images of every class (the population's, up to sampling).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metarl.config import ConfigError
from metarl.supervised.networks import BUILT_IN
from metarl.trained import LoadedRun, load_run

DATASETS = ("mnist", "fashion-mnist", "omniglot")
"""The datasets ``metarl analyze`` reads runs of."""


class FrozenNorm(nn.Module):
    """``y = (x − mean) / √(var + ε) · weight + bias`` with fixed ``mean`` and ``var``: a
    BatchNorm1d or 2d in evaluation mode, without running statistics to update (so it also runs
    under ``vmap`` with per-task weights). Statistics are per feature ``(N, C)`` or per channel
    ``(N, C, H, W)``."""

    def __init__(self, norm: nn.BatchNorm1d | nn.BatchNorm2d, mean: Tensor, var: Tensor) -> None:
        super().__init__()
        self.eps = norm.eps
        self.weight = nn.Parameter(norm.weight.detach().clone())
        self.bias = nn.Parameter(norm.bias.detach().clone())
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("var", var.detach().clone())
        self.spatial_dims = 2 if isinstance(norm, nn.BatchNorm2d) else 0

    def forward(self, x: Tensor) -> Tensor:
        shape = (-1,) + (1,) * self.spatial_dims  # (..., C) or (..., C, H, W)
        scale = (self.weight / torch.sqrt(self.var + self.eps)).view(shape)
        return (x - self.mean.view(shape)) * scale + self.bias.view(shape)


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def freeze_batchnorm(
    model: nn.Sequential, reference: Tensor, use_running: bool = True
) -> nn.Sequential:
    """A copy of ``model`` with each BatchNorm made a :class:`FrozenNorm`: its running
    statistics if it keeps them (and ``use_running``), else those of its input on
    ``reference`` (a batch of inputs)."""
    frozen = copy.deepcopy(model).eval()
    x = reference
    with torch.no_grad():
        for i, layer in enumerate(frozen):
            if isinstance(layer, NORMS):
                if layer.track_running_stats and use_running:
                    mean, var = layer.running_mean, layer.running_var
                else:
                    dims = (0,) if x.dim() == 2 else (0, 2, 3)
                    mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
                frozen[i] = FrozenNorm(layer, mean, var)
            x = frozen[i](x)
    return frozen


@dataclass
class Subject:
    """One model of the comparison.

    Attributes:
        name: its label in figures and tables (``MAML``, ``standard``, ...).
        run: the loaded run (model as trained, config, algorithm).
        frozen: the trained model with frozen BatchNorm statistics (:func:`freeze_batchnorm`).
        initial: the run's initialisation (its seed), frozen the same way.
        meta_learned: whether the run is meta-learned (it adapts; its labels are per task).
        rename: the trained network's parameter names as ``frozen`` names them (Conv4 →
            :func:`~metarl.supervised.models.conv4_sequential`; the identity for an MLP).
    """

    name: str
    run: LoadedRun
    frozen: nn.Sequential
    initial: nn.Sequential
    meta_learned: bool
    rename: Callable[[str], str] = str

    @property
    def config(self) -> Any:
        return self.run.config

    def frozen_params(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Parameters of the trained network (e.g. adapted ones) under ``frozen``'s names."""
        return {self.rename(name): p for name, p in params.items()}


def as_sequential(model: nn.Module) -> tuple[nn.Sequential, Callable[[str], str]]:
    """The network as an ``nn.Sequential`` of plain torch layers, and how its parameter names
    map onto the Sequential's. A meta-learned Conv-4 (stride version) becomes
    :func:`~metarl.supervised.models.conv4_sequential` with the same weights.

    Raises:
        ConfigError: another architecture.
    """
    from metarl.supervised.conv4 import Conv4
    from metarl.supervised.models import conv4_parameter_name, conv4_sequential

    if isinstance(model, nn.Sequential) and any(isinstance(m, NORMS) for m in model):
        return model, str
    if isinstance(model, Conv4) and model.downsample == "stride":
        n_out, filters = model.head.weight.shape
        channels = model.blocks[0].conv.weight.shape[1]
        sequential = conv4_sequential(n_out, channels, filters)
        state = {conv4_parameter_name(k): v for k, v in model.state_dict().items()}
        sequential.load_state_dict(state)
        return sequential.train(model.training), conv4_parameter_name
    raise ConfigError(
        "metarl analyze studies the BatchNorm MLP (few-shot runs with network=mlp, standard-* "
        "runs) and the stride Conv-4 (omniglot-*, standard-omniglot); this network is "
        f"{type(model).__name__}"
    )


def load_subject(run_dir: str | Path, reference: Tensor) -> Subject:
    """A run as a :class:`Subject`.

    Raises:
        ConfigError: a run whose network is not the fully connected classifier.
    """
    from metarl.experiments import get_experiment

    run = load_run(run_dir)
    config = run.config
    if getattr(config, "dataset", None) not in DATASETS:
        raise ConfigError(
            f"{run_dir}: metarl analyze reads {', '.join(DATASETS)} runs, not "
            f"{getattr(config, 'dataset', config.experiment)}"
        )
    if getattr(config, "network", "mlp") not in BUILT_IN:  # its layers mean nothing known here
        raise ConfigError(
            f"{run_dir}: metarl analyze studies the BatchNorm MLP and the stride Conv-4; this "
            f"run's network is your own ({config.network!r})"
        )
    try:
        trained, rename = as_sequential(run.model)
    except ConfigError as e:
        raise ConfigError(f"{run_dir}: {e}") from None
    meta_learned = run.algorithm is not None
    name = "MAML" if meta_learned else "standard"
    if meta_learned and getattr(config, "algorithm", "maml") != "maml":
        name = config.algorithm
    initial, _ = as_sequential(get_experiment(config.experiment).build_model(config))
    return Subject(
        name=name,
        run=run,
        frozen=freeze_batchnorm(trained, reference),
        initial=freeze_batchnorm(initial.eval(), reference, use_running=False),
        meta_learned=meta_learned,
        rename=rename,
    )


def named_layers(model: nn.Sequential) -> dict[int, str]:
    """The analysed layers of a frozen model by position: each BatchNorm (``norm1``…) and
    hidden ReLU (``hidden1``…), numbered from the input."""
    kinds = {FrozenNorm: "norm", nn.ReLU: "hidden"}
    names, counts = {}, dict.fromkeys(kinds.values(), 0)
    for i, layer in enumerate(model):
        kind = kinds.get(type(layer))
        if kind is not None:
            counts[kind] += 1
            names[i] = f"{kind}{counts[kind]}"
    return names


def norm_widths(model: nn.Sequential) -> dict[str, int]:
    """The number of units of each BatchNorm of a frozen model (``norm1``…, as
    :func:`named_layers` names them): features of a Linear layer, channels of a convolution."""
    return {
        name: model[i].weight.numel()
        for i, name in named_layers(model).items()
        if name.startswith("norm")
    }


def layer_outputs(model: nn.Sequential, images: Tensor, batch: int = 1000) -> dict[str, Tensor]:
    """The output of every layer that :func:`named_layers` names, on a frozen model and
    ``images (M, 1, 28, 28)``, each ``(M, width)``: a convolutional layer's unit is a channel,
    its activation the channel's mean over space."""
    names, outputs = named_layers(model), {}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start : start + batch]
            for i, layer in enumerate(model):
                x = layer(x)
                if i in names:
                    outputs.setdefault(names[i], []).append(x if x.dim() == 2 else x.mean((2, 3)))
    return {name: torch.cat(parts) for name, parts in outputs.items()}


def first_layer(model: nn.Sequential, image_side: int = 28) -> Tensor:
    """The first layer's filters as images ``(units, h, w)``: a Linear layer's incoming weights
    ``(units, 28, 28)``, a convolution's kernels ``(channels, 3, 3)`` (one input channel)."""
    layer = next(m for m in model if isinstance(m, nn.Linear | nn.Conv2d))
    w = layer.weight.detach()
    if isinstance(layer, nn.Conv2d):
        return w.sum(dim=1)  # the kernels over the input channels (one for Omniglot)
    return w.view(w.shape[0], image_side, image_side)
