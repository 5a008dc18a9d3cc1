"""Meta-Dataset's episodes: variable ways, variable and class-imbalanced shots, several sources.

Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few
Examples", ICLR 2020, §3.2. One episode is drawn in five steps (:func:`describe_episode`):

1. a source dataset, uniformly among those given;
2. the number of ways ``N ~ U{min_ways, ..., min(max_ways, |C|)}`` and ``N`` of the source's
   ``|C|`` classes, uniformly without replacement;
3. a balanced query set of ``q = min(max_query, ⌊min_c n_c / 2⌋)`` images per class, ``n_c``
   being class c's image count;
4. the support set's size ``|S| = min(max_support, Σ_c ⌈β · min(max_support_per_class,
   n_c − q)⌉)`` with ``β ~ U(0, 1]``;
5. each class's shots ``k_c = min(⌊R_c (|S| − N)⌋ + 1, n_c − q)`` with
   ``R_c ∝ n_c · exp(a_c)``, ``a_c ~ U[log ½, log 2)``: roughly the class frequencies, perturbed,
   and at least one shot per class.

The defaults of :class:`EpisodeSpec` are the paper's. Differences: the paper picks related
classes through Omniglot's alphabets and ImageNet's hierarchy; here classes are uniform within
a source (any image folder has no hierarchy). Sources of different image shapes are brought to
one shape (:func:`fit_images`) as the paper resizes every source to 84×84 RGB.

An episode is a :class:`~metarl.core.TaskBatch` of one task: its support and query sizes differ
from episode to episode, so episodes are not stacked. A classifier needs at least ``max_ways``
outputs; :func:`metarl.supervised.tasks.variable_way_cross_entropy_per_task` scores only the
episode's ``N`` (the labels are ``0..N−1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from metarl.core import TaskBatch
from metarl.supervised.data.episodes import ClassImages


@dataclass(frozen=True)
class EpisodeSpec:
    """The bounds of a Meta-Dataset episode (defaults: the paper's and its authors' sampler).

    Attributes:
        min_ways, max_ways: range of the number of classes ``N``.
        max_query: most query images per class.
        max_support: most support images in all.
        max_support_per_class: most a class contributes to the support set's size.
        log_weight_range: range of the log-weights ``a_c`` that perturb the class proportions.
    """

    min_ways: int = 5
    max_ways: int = 50
    max_query: int = 10
    max_support: int = 500
    max_support_per_class: int = 100
    log_weight_range: tuple[float, float] = (math.log(0.5), math.log(2.0))

    def __post_init__(self) -> None:
        if not 2 <= self.min_ways <= self.max_ways:
            raise ValueError(f"need 2 ≤ min_ways ≤ max_ways, got {self.min_ways}, {self.max_ways}")
        if self.max_support < self.max_ways:
            raise ValueError(
                f"max_support ({self.max_support}) must allow one shot for each of max_ways "
                f"({self.max_ways}) classes"
            )


class EpisodeDescription(NamedTuple):
    """What one episode holds, before any image is read.

    Attributes:
        classes: ``(N,)`` long, positions in the split's ``classes``; label i is ``classes[i]``.
        shots: ``(N,)`` long, support images of each class (at least one).
        query: query images of every class.
    """

    classes: Tensor
    shots: Tensor
    query: int


class Episode(NamedTuple):
    """A sampled episode: the task (``n_tasks`` = 1), its source's name and its description."""

    batch: TaskBatch
    source: str
    description: EpisodeDescription


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def describe_episode(
    counts: Tensor, spec: EpisodeSpec, generator: torch.Generator
) -> EpisodeDescription:
    """Steps 2–5 of the module's procedure for a split whose classes have ``counts`` images.

    Args:
        counts: ``(|C|,)`` images of each class of the split.
        spec: the bounds.
        generator: the random stream (the same state gives the same episode).

    Raises:
        ValueError: fewer than ``spec.min_ways`` classes, or a class with fewer than 2 images.
    """
    n_classes = int(counts.numel())
    if n_classes < spec.min_ways:
        raise ValueError(f"Meta-Dataset episodes need {spec.min_ways} classes, got {n_classes}")
    if int(counts.min()) < 2:
        raise ValueError("every class needs 2 images (one support, one query)")
    high = min(spec.max_ways, n_classes)
    n_way = spec.min_ways + int(_uniform(generator, 1) * (high - spec.min_ways + 1))
    classes = torch.rand(n_classes, generator=generator).topk(n_way).indices  # random order
    n = counts[classes].to(torch.float64)
    query = min(spec.max_query, int(n.min()) // 2)
    remaining = n - query
    beta = _uniform(generator, 1)  # ⌊β·x⌋ + 1 with β ∈ [0, 1) is ⌈β'·x⌉ with β' ∈ (0, 1]
    contribution = remaining.clamp(max=spec.max_support_per_class)
    support = min(spec.max_support, int((beta * contribution).floor().add(1).sum()))
    low, high_w = spec.log_weight_range
    weights = n * torch.exp(low + (high_w - low) * _uniform(generator, n_way))
    shots = (weights / weights.sum() * (support - n_way)).floor() + 1
    return EpisodeDescription(classes, torch.minimum(shots, remaining).long(), query)


def fit_images(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Images ``(B, C, H, W)`` uint8 as floats in [0, 1] of ``shape = (C', H', W')``: channels
    repeated (grey to colour) or averaged (colour to grey), then resized (bilinear,
    antialiased) if the size differs."""
    out = x.float().div_(255.0)
    channels, height, width = shape
    if out.shape[1] != channels:
        if out.shape[1] == 1:
            out = out.expand(-1, channels, -1, -1)
        elif channels == 1:
            out = out.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"cannot map {out.shape[1]} channels to {channels}")
    if tuple(out.shape[-2:]) != (height, width):
        out = F.interpolate(out, size=(height, width), mode="bilinear", antialias=True)
    return out.contiguous()


def sample_meta_dataset_episode(
    sources: Mapping[str, ClassImages],
    spec: EpisodeSpec,
    generator: torch.Generator,
    image_shape: tuple[int, int, int],
) -> Episode:
    """One Meta-Dataset episode from one of ``sources``.

    Args:
        sources: the splits to draw from, by name (e.g. ``{"omniglot": ..., "mnist": ...}``);
            step 1 picks one uniformly.
        spec: the episode's bounds.
        generator: the random stream.
        image_shape: ``(C, H, W)`` of the images handed to the model (:func:`fit_images`).

    Returns:
        An :class:`Episode` whose batch has ``support_x (1, Σ k_c, C, H, W)``, ``support_y
        (1, Σ k_c)`` (class-major: class 0's shots, then class 1's, ...), ``query_x
        (1, N·q, C, H, W)`` and ``query_y (1, N·q)``; no image is in both sets.
    """
    if not sources:
        raise ValueError("Meta-Dataset episodes need at least one source")
    names = list(sources)
    name = names[int(_uniform(generator, 1) * len(names))]
    split = sources[name]
    counts = (
        torch.full((split.n_classes,), split.images.shape[1])
        if split.counts is None
        else split.counts[split.classes]
    )
    description = describe_episode(counts, spec, generator)
    support, query, support_y, query_y = [], [], [], []
    for label, (position, k) in enumerate(zip(description.classes, description.shots)):
        source_class = split.classes[position]
        order = torch.randperm(int(counts[position]), generator=generator)
        images = split.images[source_class, order[: int(k) + description.query]]
        if split.rotations is not None:
            images = images.rot90(int(split.rotations[position]), dims=(-2, -1))
        support.append(images[: int(k)])
        query.append(images[int(k) :])
        support_y.append(torch.full((int(k),), label))
        query_y.append(torch.full((description.query,), label))
    batch = TaskBatch(
        fit_images(torch.cat(support), image_shape).unsqueeze(0),
        torch.cat(support_y).unsqueeze(0),
        fit_images(torch.cat(query), image_shape).unsqueeze(0),
        torch.cat(query_y).unsqueeze(0),
    )
    return Episode(batch, name, description)
