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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metarl.api import LoadedRun, load_run
from metarl.config import ConfigError


class FrozenNorm(nn.Module):
    """``y = (x − mean) / √(var + ε) · weight + bias`` with fixed ``mean`` and ``var``: a
    BatchNorm1d in evaluation mode, without running statistics to update (so it also runs under
    ``vmap`` with per-task weights)."""

    def __init__(self, norm: nn.BatchNorm1d, mean: Tensor, var: Tensor) -> None:
        super().__init__()
        self.eps = norm.eps
        self.weight = nn.Parameter(norm.weight.detach().clone())
        self.bias = nn.Parameter(norm.bias.detach().clone())
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("var", var.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / torch.sqrt(self.var + self.eps) * self.weight + self.bias


def freeze_batchnorm(
    model: nn.Sequential, reference: Tensor, use_running: bool = True
) -> nn.Sequential:
    """A copy of ``model`` with each BatchNorm1d made a :class:`FrozenNorm`: its running
    statistics if it keeps them (and ``use_running``), else those of its input on
    ``reference`` (a batch of inputs)."""
    frozen = copy.deepcopy(model).eval()
    x = reference
    with torch.no_grad():
        for i, layer in enumerate(frozen):
            if isinstance(layer, nn.BatchNorm1d):
                if layer.track_running_stats and use_running:
                    mean, var = layer.running_mean, layer.running_var
                else:
                    mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
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
    """

    name: str
    run: LoadedRun
    frozen: nn.Sequential
    initial: nn.Sequential
    meta_learned: bool

    @property
    def config(self) -> Any:
        return self.run.config


def load_subject(run_dir: str | Path, reference: Tensor) -> Subject:
    """A run as a :class:`Subject`.

    Raises:
        ConfigError: a run whose network is not the fully connected classifier.
    """
    from metarl.experiments import get_experiment

    run = load_run(run_dir)
    config = run.config
    if not isinstance(run.model, nn.Sequential) or not any(
        isinstance(m, nn.BatchNorm1d) for m in run.model
    ):
        raise ConfigError(
            f"{run_dir}: metarl analyze studies the fully connected classifier (few-shot runs "
            "with network=mlp, and standard-* runs); this run's network is "
            f"{type(run.model).__name__}"
        )
    if getattr(config, "dataset", None) not in ("mnist", "fashion-mnist"):
        raise ConfigError(f"{run_dir}: metarl analyze reads (Fashion-)MNIST runs only so far")
    meta_learned = run.algorithm is not None
    name = "MAML" if meta_learned else "standard"
    if meta_learned and getattr(config, "algorithm", "maml") != "maml":
        name = config.algorithm
    initial = get_experiment(config.experiment).build_model(config)
    return Subject(
        name=name,
        run=run,
        frozen=freeze_batchnorm(run.model, reference),
        initial=freeze_batchnorm(initial.eval(), reference, use_running=False),
        meta_learned=meta_learned,
    )


def layer_outputs(model: nn.Sequential, images: Tensor, batch: int = 1000) -> dict[str, Tensor]:
    """The output of every BatchNorm (``norm1``…) and hidden ReLU (``hidden1``…) of a frozen
    model on ``images (M, 1, 28, 28)``, each ``(M, width)``."""
    names, outputs = {}, {}
    norms = hidden = 0
    for i, layer in enumerate(model):
        if isinstance(layer, FrozenNorm):
            norms += 1
            names[i] = f"norm{norms}"
        elif isinstance(layer, nn.ReLU):
            hidden += 1
            names[i] = f"hidden{hidden}"
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start : start + batch]
            for i, layer in enumerate(model):
                x = layer(x)
                if i in names:
                    outputs.setdefault(names[i], []).append(x)
    return {name: torch.cat(parts) for name, parts in outputs.items()}


def first_layer(model: nn.Sequential) -> Tensor:
    """The first Linear layer's weights ``(units, 784)``."""
    return next(m for m in model if isinstance(m, nn.Linear)).weight.detach()
