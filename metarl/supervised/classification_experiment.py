"""Few-shot classification: data splits, the Conv-4 model and meta-training.

The training loop is the shared :func:`metarl.supervised.trainer.meta_train`; this module only
says what a task is (an N-way K-shot episode of the configured dataset), what the model is and
how it is scored (cross-entropy, accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.algorithms import Problem, make_algorithm
from metarl.core import TaskBatch
from metarl.seeding import seeded
from metarl.supervised.config import ClassificationConfig
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.episodes import ClassImages, sample_episodes
from metarl.supervised.models import bn_mlp
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task
from metarl.supervised.trainer import check_meta_batch_memory, meta_train


def load_split(config: ClassificationConfig, subset: str) -> ClassImages:
    """The classes of ``subset`` (``"train"``, ``"val"`` or ``"test"``) of the config's dataset.

    Raises:
        DataError: the data is missing or corrupt (the message says what to do).
    """
    if config.dataset == "omniglot":
        from metarl.supervised.data.omniglot import load_omniglot, omniglot_split

        return omniglot_split(load_omniglot(config.data_dir), config.split, subset, config.data_dir)
    if config.dataset in ("mnist", "fashion-mnist"):
        from metarl.supervised.data.mnist import mnist_split

        return mnist_split(config.dataset, config.train_classes, subset, config.data_dir)
    if config.dataset == "cifar10":
        from metarl.supervised.data.cifar import cifar10_split

        return cifar10_split(config.train_classes, subset, config.data_dir)
    from metarl.supervised.data.image_folder import image_folder_split

    assert config.data_dir is not None  # validated
    return image_folder_split(config.data_dir, subset, config.image_size)


def check_data(config: ClassificationConfig) -> None:
    """That the config's dataset is where it is looked for (without reading it).

    Raises:
        DataError: it is not (the message says where it was looked for and what to do).
    """
    from metarl.supervised.data.files import DataError, dataset_dir

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
    support = torch.zeros(config.n_way * config.k_shot, channels, side, side)
    query = torch.zeros(config.n_way * config.k_query, channels, side, side)
    check_meta_batch_memory(config, model, support, query)


def image_shape(config: ClassificationConfig) -> tuple[int, int]:
    """``(channels, side)`` of the config's images (known without reading the data)."""
    if config.dataset == "image_folder":
        return 3, config.image_size
    if config.dataset == "cifar10":
        return 3, 32
    return 1, 28


def build_model(config: ClassificationConfig) -> nn.Module:
    """The network the config describes (Conv-4, or the fully connected ``mlp``), its initial
    weights drawn from ``config.seed``."""
    channels, side = image_shape(config)
    with seeded(config.seed):
        if config.network == "mlp":
            return bn_mlp(channels * side * side, config.mlp_hidden, config.n_way)
        return Conv4(config.n_way, channels, side, config.filters, config.downsample)  # type: ignore[arg-type]


def problem(config: ClassificationConfig) -> Problem:
    """Cross-entropy, scored by accuracy; the query pass under the config's ``bn_policy``."""
    query_inputs = None
    if config.bn_policy == "support_statistics":

        def query_inputs(batch: TaskBatch) -> tuple[torch.Tensor, ...]:
            return batch.query_x, batch.support_x

    return Problem(cross_entropy_per_task, accuracy_per_task, "accuracy", query_inputs)


def train(
    config: ClassificationConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    progress: bool = True,
) -> nn.Module:
    """Meta-train the network on the config's meta-training classes into ``run_dir``."""
    classes = load_split(config, "train")

    def sample_batch(gen: torch.Generator) -> TaskBatch:
        return sample_episodes(
            classes, config.meta_batch_size, config.n_way, config.k_shot, config.k_query, gen
        )

    model = build_model(config)
    algorithm = make_algorithm(config, model)
    return meta_train(
        config, model, algorithm, problem(config), sample_batch, run_dir, resume_state, progress
    )
