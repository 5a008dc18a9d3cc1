"""Few-shot classification: data splits, the Conv-4 model and meta-training.

The training loop is the shared :func:`metarl.supervised.trainer.meta_train`; this module only
says what a task is (an N-way K-shot episode of the configured dataset), what the model is and
how it is scored (cross-entropy, accuracy).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.algorithms import MetaAlgorithm, Problem, make_algorithm
from metarl.core import TaskBatch
from metarl.reports import Curve
from metarl.seeding import seeded
from metarl.supervised.adaptation import adaptation_curve
from metarl.supervised.classification_config import ClassificationConfig
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.episodes import ClassImages, fixed_episodes, sample_episodes
from metarl.supervised.data.meta_dataset import EpisodeSpec, sample_meta_dataset_episode
from metarl.supervised.models import bn_mlp
from metarl.supervised.networks import BUILT_IN, build_registered
from metarl.supervised.tasks import (
    accuracy_per_task,
    cross_entropy_per_task,
    variable_way_accuracy_per_task,
    variable_way_cross_entropy_per_task,
)
from metarl.supervised.trainer import Validation, check_meta_batch_memory, meta_train


def load_split(config: ClassificationConfig, subset: str) -> ClassImages:
    """The classes of ``subset`` (``"train"``, ``"val"`` or ``"test"``) of the config's dataset.

    Raises:
        DataError: the data is missing or corrupt (the message says what to do).
    """
    if config.dataset == "omniglot":
        from metarl.supervised.data.omniglot import load_omniglot, omniglot_split

        data = load_omniglot(config.data_dir, resize=config.omniglot_resize)
        return omniglot_split(data, config.split, subset, config.data_dir)
    if config.dataset in ("mnist", "fashion-mnist"):
        from metarl.supervised.data.mnist import mnist_split

        return mnist_split(config.dataset, config.train_classes, subset, config.data_dir)
    if config.dataset == "cifar10":
        from metarl.supervised.data.cifar import cifar10_split

        return cifar10_split(config.train_classes, subset, config.data_dir)
    from metarl.supervised.data.image_folder import image_folder_split

    assert config.data_dir is not None  # validated
    return image_folder_split(config.data_dir, subset, config.image_size)


def source_config(config: ClassificationConfig, name: str) -> ClassificationConfig:
    """The config of one Meta-Dataset source: ``dataset=name``; ``data_dir`` is an image
    folder's own, so the other sources are looked for where they would be without it."""
    if name == "image_folder" or config.dataset == name:
        return dataclasses.replace(config, dataset=name)
    return dataclasses.replace(config, dataset=name, data_dir=None)


def source_splits(
    config: ClassificationConfig, subset: str, names: list[str]
) -> dict[str, ClassImages]:
    """``subset``'s classes of each dataset in ``names``, by name."""
    return {name: load_split(source_config(config, name), subset) for name in names}


def every_source(config: ClassificationConfig) -> list[str]:
    """The datasets a Meta-Dataset run reads, trained on or evaluated, each once."""
    return list(dict.fromkeys(config.training_sources + config.evaluated_sources))


def episode_spec(config: ClassificationConfig) -> EpisodeSpec:
    """Meta-Dataset's bounds (the paper's) with the config's ``max_ways``."""
    return EpisodeSpec(max_ways=config.max_ways)


def check_data(config: ClassificationConfig) -> None:
    """That the config's dataset is where it is looked for (without reading it).

    Raises:
        DataError: it is not (the message says where it was looked for and what to do).
    """
    from metarl.supervised.data.files import DataError, dataset_dir

    if config.episodes == "meta_dataset":
        for name in every_source(config):
            check_data(dataclasses.replace(source_config(config, name), episodes="fixed"))
        return
    if config.dataset == "image_folder":
        if not Path(str(config.data_dir)).is_dir():
            raise DataError(f"data_dir: image folder {config.data_dir} not found")
        return
    from metarl.supervised.data.mnist import FALLBACK_DIRS

    dataset_dir(config.data_dir, config.dataset, FALLBACK_DIRS.get(config.dataset, ()))


def preflight(config: ClassificationConfig) -> None:
    """Checks before a run directory is created: the data, and one meta-batch's memory."""
    check_data(config)
    channels, side = image_shape(config)
    model = build_model(config)
    if config.episodes == "meta_dataset":  # the largest episode
        spec = episode_spec(config)
        shots, queries = spec.max_support, spec.max_ways * spec.max_query
    else:
        shots, queries = config.n_way * config.k_shot, config.n_way * config.k_query
    support = torch.zeros(shots, channels, side, side)
    query = torch.zeros(queries, channels, side, side)
    check_meta_batch_memory(config, model, support, query)


def image_shape(config: ClassificationConfig) -> tuple[int, int]:
    """``(channels, side)`` of the config's images (known without reading the data). Meta-Dataset
    sources meet at the largest side, in colour if any source is."""
    if config.episodes == "meta_dataset":
        shapes = [image_shape(dataclasses.replace(config, dataset=n, episodes="fixed"))
                  for n in every_source(config)]  # fmt: skip
        return max(c for c, _ in shapes), max(s for _, s in shapes)
    if config.dataset == "image_folder":
        return 3, config.image_size
    if config.dataset == "cifar10":
        return 3, 32
    return 1, 28


def build_model(config: ClassificationConfig) -> nn.Module:
    """The network the config describes (Conv-4, the fully connected ``mlp``, or one added with
    :func:`~metarl.supervised.networks.register_network`), its initial weights drawn from
    ``config.seed``."""
    channels, side = image_shape(config)
    outputs = config.max_ways if config.episodes == "meta_dataset" else config.n_way
    with seeded(config.seed):
        if config.network not in BUILT_IN:
            return build_registered(config.network, (channels, side, side), outputs)
        if config.network == "mlp":
            return bn_mlp(channels * side * side, config.mlp_hidden, outputs)
        return Conv4(outputs, channels, side, config.filters, config.downsample)  # type: ignore[arg-type]


def io_shapes(config: ClassificationConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One image ``(C, H, W)`` and its integer label ``()``."""
    channels, side = image_shape(config)
    return (channels, side, side), ()


def problem(config: ClassificationConfig) -> Problem:
    """Cross-entropy, scored by accuracy; the query pass under the config's ``bn_policy``."""
    query_inputs = None
    if config.bn_policy == "support_statistics":

        def query_inputs(batch: TaskBatch) -> tuple[torch.Tensor, ...]:
            return batch.query_x, batch.support_x

    if config.episodes == "meta_dataset":  # each episode scored over its own classes
        return Problem(variable_way_cross_entropy_per_task, variable_way_accuracy_per_task,
                       "accuracy", query_inputs)  # fmt: skip
    return Problem(cross_entropy_per_task, accuracy_per_task, "accuracy", query_inputs)


def validation(config: ClassificationConfig) -> Validation:
    """The score :func:`train` logs every ``val_every`` iterations: the protocol of ``metarl
    evaluate`` (``eval_steps`` steps, ``eval_lr``) on ``val_tasks`` fixed episodes of the
    validation classes, drawn once from ``eval_seed``. It shows where accuracy on unseen
    classes stops improving without touching the test classes.

    The returned function maps ``(model, algorithm)`` to ``val/accuracy`` (after the last step),
    ``val/accuracy_ci95`` (its 95% interval's half-width) and ``val/accuracy_before`` (0 steps).
    """
    episodes = fixed_episodes(
        load_split(config, "val"), config.val_tasks, config.n_way, config.k_shot,
        config.test_k_query, config.eval_seed,
    )  # fmt: skip
    scored = problem(config)

    def validate(model: nn.Module, algorithm: MetaAlgorithm) -> dict[str, float]:
        device = next(model.parameters()).device
        values = adaptation_curve(
            algorithm, model, episodes.to(device), scored, config.eval_steps, config.eval_lr,
            chunk_size=config.eval_chunk,
        )  # fmt: skip
        curve = Curve.from_samples("meta_learned", "validation", values.cpu(), "ci95")
        return {"val/accuracy": curve.mean[-1], "val/accuracy_ci95": curve.error[-1],
                "val/accuracy_before": curve.mean[0]}  # fmt: skip

    return validate


def train(
    config: ClassificationConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    progress: bool = True,
    stop_at: float | None = None,
) -> nn.Module:
    """Meta-train the network on the config's meta-training classes into ``run_dir`` (until
    ``stop_at``, a ``time.time()``, if given: :func:`~metarl.supervised.trainer.meta_train`)."""
    if config.episodes == "meta_dataset":
        sources = source_splits(config, "train", config.training_sources)
        spec, (channels, side) = episode_spec(config), image_shape(config)

        def sample_batch(gen: torch.Generator) -> TaskBatch:
            return sample_meta_dataset_episode(sources, spec, gen, (channels, side, side)).batch

    else:
        classes = load_split(config, "train")

        def sample_batch(gen: torch.Generator) -> TaskBatch:
            return sample_episodes(
                classes, config.meta_batch_size, config.n_way, config.k_shot, config.k_query, gen
            )

    model = build_model(config)
    algorithm = make_algorithm(config, model)
    validate = validation(config) if config.validates else None
    return meta_train(
        config, model, algorithm, problem(config), sample_batch, run_dir, resume_state, progress,
        validate, stop_at,
    )  # fmt: skip
