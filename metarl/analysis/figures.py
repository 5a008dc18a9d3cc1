"""The figures of ``metarl analyze``, one function each, models side by side.

Every figure is drawn with matplotlib's object API and written to a PNG (no backend, no global
state), like :mod:`metarl.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from metarl.plots import new_figure, save


def tile(images: Tensor, columns: int, normalise_each: bool = True, gap: float = 1.0) -> Tensor:
    """``(n, H, W)`` images as one ``(rows·(H+1), columns·(W+1))`` mosaic with 1-pixel gaps of
    value ``gap``; each image scaled to [0, 1] on its own range (``normalise_each``)."""
    n, h, w = images.shape
    if normalise_each:
        low = images.flatten(1).min(dim=1).values.view(n, 1, 1)
        high = images.flatten(1).max(dim=1).values.view(n, 1, 1)
        images = (images - low) / (high - low).clamp_min(1e-12)
    rows = math.ceil(n / columns)
    mosaic = torch.full((rows * (h + 1), columns * (w + 1)), gap)
    for i in range(n):
        r, c = divmod(i, columns)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i]
    return mosaic


def filters(weights: dict[str, Tensor], path: Path) -> Path:
    """First-layer filters ``(units, h, w)`` (a unit's incoming weights as an image, or a
    convolution's kernel), a grid per model, side by side (red positive, blue negative, each
    filter on its own scale)."""
    fig = new_figure(5.0 * len(weights), 5.2)
    for ax, (name, w) in zip(fig.subplots(1, len(weights), squeeze=False)[0], weights.items()):
        units = w.shape[0]
        columns = math.ceil(math.sqrt(units))
        scale = w.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        centred = (w / scale) * 0.5 + 0.5  # 0.5 = zero weight
        ax.imshow(
            tile(centred, columns, normalise_each=False, gap=0.5).numpy(),  # gaps white
            cmap="RdBu_r",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        kind = "first-layer units" if w.shape[-1] > 5 else f"{w.shape[-2]}×{w.shape[-1]} kernels"
        ax.set_title(f"{name}: {units} {kind}")
        ax.axis("off")
    return save(fig, path, dpi=100)  # about one screen pixel per weight: a smaller file


def embeddings(points: dict[str, dict[str, Tensor]], labels: Tensor, path: Path) -> Path:
    """2-D embeddings of the last hidden layer: one row per method (``PCA``, ``t-SNE``), one
    column per model, points coloured by label."""
    methods = list(next(iter(points.values())))
    fig = new_figure(4.2 * len(points), 3.8 * len(methods))
    axes = fig.subplots(len(methods), len(points), squeeze=False)
    for col, (name, by_method) in enumerate(points.items()):
        for row, method in enumerate(methods):
            ax = axes[row][col]
            xy = by_method[method].numpy()
            scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=3, vmin=-0.5,
                                 vmax=9.5)  # fmt: skip
            ax.set_title(f"{name}: {method}")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(scatter, ax=axes.ravel().tolist(), ticks=range(10), label="label")
    fig.savefig(path, dpi=120)
    return path


def activating_examples(rows: Sequence[tuple[str, Tensor, Tensor]], path: Path, title: str) -> Path:
    """Per unit (one row each), its most activating test images (left) and least activating
    ones (right); ``rows`` holds ``(label, top (k, 28, 28), bottom (k, 28, 28))``."""
    k = rows[0][1].shape[0]
    fig = new_figure(0.55 * (2 * k + 1) + 1.6, 0.62 * len(rows) + 0.8)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, top, bottom) in zip(axes, rows):
        gap = torch.zeros(1, *top.shape[1:])  # white between the two halves
        ax.imshow(tile(torch.cat([top, gap, bottom]), 2 * k + 1, normalise_each=False).numpy(),
                  cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"{title}: most activating | least activating", fontsize=9)
    return save(fig, path)


def image_rows(rows: dict[str, Tensor], path: Path, title: str, cmap: str = "gray_r",
               columns_title: Sequence[str] = ()) -> Path:  # fmt: skip
    """One row of images per model (``(n, 28, 28)`` each, each image on its own scale)."""
    n = next(iter(rows.values())).shape[0]
    fig = new_figure(1.0 * n + 1.4, 1.1 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(tile(images[c : c + 1], 1).numpy(), cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0 and columns_title:
                ax.set_title(columns_title[c], fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


def cosine_matrices(matrices: dict[str, Tensor], path: Path, n_tasks: int) -> Path:
    """Cosine similarity of the per-task gradients, ``[support 1..T, query 1..T]`` on both
    axes, one panel per model (and stage)."""
    fig = new_figure(3.4 * len(matrices), 3.4)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, matrices.items()):
        image = ax.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.axhline(n_tasks - 0.5, color="k", lw=0.5)
        ax.axvline(n_tasks - 0.5, color="k", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([n_tasks / 2 - 0.5, 1.5 * n_tasks - 0.5], ["support", "query"])
        ax.set_yticks([n_tasks / 2 - 0.5, 1.5 * n_tasks - 0.5], ["support", "query"])
    fig.colorbar(image, ax=list(axes), label="cosine")
    fig.savefig(path, dpi=120)
    return path


def alignment_over_training(series: dict[str, tuple[list[int], list[float], list[float]]],
                            path: Path) -> Path:  # fmt: skip
    """``align/same_task_cosine`` and ``align/across_task_cosine`` over training, per run."""
    fig = new_figure(5.4, 3.6)
    ax = fig.subplots()
    for name, (iterations, same, across) in series.items():
        line = ax.plot(iterations, same, label=f"{name}: support·query, same task")[0]
        ax.plot(iterations, across, ls="--", color=line.get_color(),
                label=f"{name}: across tasks")  # fmt: skip
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean cosine of the gradients")
    ax.legend(fontsize=7)
    return save(fig, path)
