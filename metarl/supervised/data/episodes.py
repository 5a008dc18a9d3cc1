"""N-way K-shot episodes, sampled as tensors from a preloaded image store.

A split is a :class:`ClassImages`: one uint8 tensor holding every image of the dataset
grouped by class, and the classes of this split (indices into it, optionally each with a
fixed rotation). Sampling a meta-batch is a handful of tensor operations on that store: random
keys pick the classes and the images (top-k of uniform noise = a uniform subset without
replacement, in random order), one advanced-indexing gather copies them out, and the rotations
are applied to the whole batch at once. No per-image Python work, no decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.core import TaskBatch


@dataclass
class ClassImages:
    """The classes of one split and their images.

    Attributes:
        images: ``(n_source_classes, max_per_class, C, H, W)`` uint8, every image of the dataset
            (shared between splits; classes with fewer images are zero-padded, see ``counts``).
        classes: ``(n_classes,)`` long, the source classes that make up this split.
        rotations: ``(n_classes,)`` long in 0..3 or None: a fixed rotation by k·90° of each class
            (Vinyals' Omniglot split, where a rotated character is a class of its own).
        random_rotation: rotate every class of every episode by its own random k·90° (the MAML
            paper's Omniglot augmentation).
        counts: ``(n_source_classes,)`` long, images per source class; None: all are full.
    """

    images: Tensor
    classes: Tensor
    rotations: Tensor | None = None
    random_rotation: bool = False
    counts: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 5 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"images must be (classes, per_class, C, H, W) uint8, got "
                f"{tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.rotations is not None and self.rotations.shape != self.classes.shape:
            raise ValueError("rotations must have one entry per class")
        if (self.rotations is not None or self.random_rotation) and (
            self.images.shape[-1] != self.images.shape[-2]
        ):
            raise ValueError("rotations by 90° need square images")

    @property
    def n_classes(self) -> int:
        return int(self.classes.numel())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[2:]
        return int(c), int(h), int(w)

    def min_count(self) -> int:
        """Fewest images of any class of this split."""
        if self.counts is None:
            return int(self.images.shape[1])
        return int(self.counts[self.classes].min())


def sample_episodes(
    split: ClassImages,
    n_tasks: int,
    n_way: int,
    k_shot: int,
    k_query: int,
    generator: torch.Generator,
) -> TaskBatch:
    """``n_tasks`` N-way K-shot episodes with ``k_query`` query images per class.

    Every episode draws ``n_way`` distinct classes of ``split`` and ``k_shot + k_query``
    distinct images of each; class labels 0..N-1 are assigned in random order. Images are
    floats in [0, 1].

    Returns:
        A :class:`TaskBatch`: ``support_x (n_tasks, N*K, C, H, W)``, ``support_y (n_tasks, N*K)``
        (long, class-major: the K shots of label 0, then of label 1, ...), ``query_x
        (n_tasks, N*Q, C, H, W)``, ``query_y (n_tasks, N*Q)``.

    Raises:
        ValueError: the split has fewer than ``n_way`` classes or a class has fewer than
            ``k_shot + k_query`` images.
    """
    per_class = k_shot + k_query
    if n_way > split.n_classes:
        raise ValueError(
            f"{n_way}-way episodes need {n_way} classes; the split has {split.n_classes}"
        )
    if per_class > split.min_count():
        raise ValueError(
            f"k_shot + k_query = {per_class} images per class, but a class of the split has only "
            f"{split.min_count()}"
        )
    # Classes: the n_way largest of n_classes uniform keys = a uniform subset, in random order.
    pick = torch.rand(n_tasks, split.n_classes, generator=generator).topk(n_way, dim=1).indices
    source = split.classes[pick]  # (T, N)
    index = _sample_images(split, source, per_class, generator)  # (T, N, K+Q)
    x = split.images[source.unsqueeze(-1), index]  # (T, N, K+Q, C, H, W) uint8
    if split.rotations is not None:
        x = _rotate(x, split.rotations[pick])
    elif split.random_rotation:
        x = _rotate(x, torch.randint(0, 4, (n_tasks, n_way), generator=generator))
    x = x.float().div_(255.0)
    labels = torch.arange(n_way).view(1, n_way, 1).expand(n_tasks, n_way, per_class)

    def flat(t: Tensor) -> Tensor:  # (T, N, S, ...) -> (T, N*S, ...)
        return t.reshape(n_tasks, -1, *t.shape[3:])

    return TaskBatch(
        flat(x[:, :, :k_shot]),
        flat(labels[:, :, :k_shot]),
        flat(x[:, :, k_shot:]),
        flat(labels[:, :, k_shot:]),
    )


def _sample_images(
    split: ClassImages, source: Tensor, per_class: int, generator: torch.Generator
) -> Tensor:
    """``per_class`` distinct image indices of each class in ``source (T, N)`` -> ``(T, N, S)``.

    Few images per class (Omniglot's 20): the top-k of one uniform key per image, with key -1
    for padding slots. Many (MNIST's ~7,000): draw S indices uniformly and redraw the rows that
    contain a repeat (rejection sampling of ordered tuples: exactly uniform, and rare when
    S² ≪ count), which avoids a key for every image of the class.
    """
    n_tasks, n_way = source.shape
    max_per_class = split.images.shape[1]
    if max_per_class <= 64 or 2 * per_class**2 > split.min_count():
        keys = torch.rand(n_tasks, n_way, max_per_class, generator=generator)
        if split.counts is not None:
            padding = torch.arange(max_per_class) >= split.counts[source].unsqueeze(-1)
            keys.masked_fill_(padding, -1.0)
        return keys.topk(per_class, dim=2).indices
    counts = (
        torch.full_like(source, max_per_class) if split.counts is None else split.counts[source]
    ).unsqueeze(-1)

    def draw(count: Tensor) -> Tensor:  # float64: rand·count stays below count
        u = torch.rand(*count.shape[:-1], per_class, generator=generator, dtype=torch.float64)
        return (u * count).long()

    index = draw(counts)
    while True:
        ordered = index.sort(dim=-1).values
        repeated = (ordered[..., 1:] == ordered[..., :-1]).any(dim=-1)  # (T, N)
        if not repeated.any():
            return index
        index[repeated] = draw(counts[repeated])


def _rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate ``x (T, N, S, C, H, W)`` of class (t, n) by ``k[t, n]``·90°, all at once."""
    rotated = torch.stack([x.rot90(r, dims=(-2, -1)) for r in range(4)])  # (4, T, N, ...)
    t = torch.arange(x.shape[0]).unsqueeze(1)
    n = torch.arange(x.shape[1]).unsqueeze(0)
    return rotated[k, t, n]


def fixed_episodes(
    split: ClassImages,
    n_episodes: int,
    n_way: int,
    k_shot: int,
    k_query: int,
    seed: int,
) -> TaskBatch:
    """The test episodes: the same ``n_episodes`` for a given ``seed``, whatever ran before."""
    return sample_episodes(
        split, n_episodes, n_way, k_shot, k_query, torch.Generator().manual_seed(seed)
    )
