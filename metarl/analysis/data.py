"""What ``metarl analyze`` looks at: the images and labels of a run's dataset, the classes a run
trained on and those it never saw, and few-shot episodes drawn from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metarl.analysis.models import Subject
from metarl.config import ConfigError
from metarl.core import TaskBatch
from metarl.supervised.data.omniglot import N_CHARACTERS

TEST_IMAGES = 60_000  # (Fashion-)MNIST: images from this index on are the test file's


def analysis_images(run: str | Path) -> tuple[Tensor, Tensor, str]:
    """The images the analysis looks at ``(M, 1, 28, 28)`` in [0, 1], their labels ``(M,)`` and
    the dataset: (Fashion-)MNIST's test file; all of Omniglot, labelled by character (its
    index in :func:`~metarl.supervised.data.omniglot.load_omniglot`'s sorted list)."""
    from metarl.analysis.models import DATASETS
    from metarl.run import load_checkpoint

    config = load_checkpoint(run)["config"]
    dataset = config.get("dataset")
    if dataset not in DATASETS:
        raise ConfigError(
            f"{run}: metarl analyze reads {', '.join(DATASETS)} runs, not "
            f"{dataset or config.get('experiment')}"
        )
    if dataset == "omniglot":
        from metarl.supervised.data.omniglot import load_omniglot

        resize = config.get("omniglot_resize", "lanczos")  # the images the run saw
        images = load_omniglot(config.get("data_dir"), resize=resize)["images"]  # (1623, 20, 28²)
        labels = torch.arange(len(images)).repeat_interleave(images.shape[1])
        return images.reshape(-1, 1, *images.shape[-2:]).float() / 255.0, labels, dataset
    from metarl.supervised.data.mnist import load_idx_dataset

    images, labels = load_idx_dataset(dataset, config.get("data_dir"))
    return images[TEST_IMAGES:].unsqueeze(1).float() / 255.0, labels[TEST_IMAGES:], dataset


def trained_classes(config: Any) -> list[int]:
    """The labels a run trained on, as :func:`analysis_images` labels them: Omniglot's maml
    split training characters, else ``train_classes``."""
    if config.dataset == "omniglot":
        from metarl.supervised.data.omniglot import load_omniglot, omniglot_split

        if getattr(config, "split", "maml") != "maml":  # vinyals: rotations are classes
            raise ConfigError(
                f"{config.experiment}: metarl analyze reads Omniglot runs of split=maml only "
                f"(this one: split={config.split})"
            )
        data = load_omniglot(config.data_dir, resize=getattr(config, "omniglot_resize", "lanczos"))
        return omniglot_split(data, "maml", "train", config.data_dir).classes.tolist()
    return list(config.train_classes)


def held_out_classes(subjects: list[Subject]) -> tuple[list[int], str]:
    """The labels a meta-learned (or class-restricted) run never trained on, and a note that
    says which runs did see them."""
    held_out, note = [5, 6, 7, 8, 9], "labels 5-9 (every run here trained on all labels)"
    for s in subjects:
        if s.meta_learned or getattr(s.config, "classes", "all") == "train":
            train = set(trained_classes(s.config))
            n_labels = 10 if s.config.dataset != "omniglot" else N_CHARACTERS
            held_out = [c for c in range(n_labels) if c not in train]
            note = f"the labels {s.name} did not train on"
            if s.config.dataset == "omniglot":
                note = (f"the {len(held_out)} characters outside the maml split's training "
                        "characters (its validation and test characters)")  # fmt: skip
            break
    saw = [
        s.name
        for s in subjects
        if not s.meta_learned and getattr(s.config, "classes", "all") == "all"
    ]
    if saw and "did not" in note:
        note += f"; {' and '.join(saw)} trained on all ten labels, these included"
    return held_out, note


def episodes(
    images: Tensor, labels: Tensor, classes: list[int], n_tasks: int, n_way: int, k_shot: int,
    k_query: int, generator: torch.Generator, output_of: Callable[[int, int], int],
) -> TaskBatch:  # fmt: skip
    """``n_tasks`` episodes from ``classes``; ``output_of(class, position)`` is the label a
    model gives class ``class`` drawn at ``position`` of the episode."""
    support_x, support_y, query_x, query_y = [], [], [], []
    for _ in range(n_tasks):
        chosen = [classes[i] for i in torch.randperm(len(classes), generator=generator)[:n_way]]
        sx, sy, qx, qy = [], [], [], []
        for position, c in enumerate(chosen):
            pool = images[labels == c]
            pick = pool[torch.randperm(len(pool), generator=generator)[: k_shot + k_query]]
            sx.append(pick[:k_shot])
            qx.append(pick[k_shot:])
            sy += [output_of(c, position)] * k_shot
            qy += [output_of(c, position)] * k_query
        support_x.append(torch.cat(sx))
        query_x.append(torch.cat(qx))
        support_y.append(torch.tensor(sy))
        query_y.append(torch.tensor(qy))
    return TaskBatch(torch.stack(support_x), torch.stack(support_y), torch.stack(query_x),
                     torch.stack(query_y))  # fmt: skip
