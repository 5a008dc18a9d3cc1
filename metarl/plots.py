"""Figures shared by every experiment: adaptation curves and learning curves.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`) and saved
straight to files, so no plotting backend is chosen and no global state is touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metarl.reports import Curve


def new_figure(width: float, height: float) -> Figure:
    """A figure that is only ever saved to a file (no window, no backend)."""
    return Figure(figsize=(width, height))


def save(fig: Figure, path: Path, dpi: int = 120, bottom: float = 0.0) -> Path:
    """Lay out ``fig`` (leaving the fraction ``bottom`` free, e.g. for a figure legend) and
    write it to ``path`` (creating its folder)."""
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def adaptation_curves(
    curves: Sequence[Curve],
    path: Path,
    ylabel: str,
    title: str = "",
    log_y: bool = False,
    scale: float = 1.0,
) -> Path:
    """Metric vs gradient steps, one line per method, with the curves' error bars.

    A method with a single step (an oracle, evaluated without adaptation) is drawn as a gray
    horizontal line, dashed, dotted, ... in turn. Values are multiplied by ``scale``. Curves of
    several settings (one method on several datasets) are labelled ``method, setting``.
    """
    fig = new_figure(5.2, 3.8)
    ax = fig.subplots()
    line_styles = itertools.cycle(["--", ":", "-.", (0, (5, 1, 1, 1))])  # single-step methods
    several = len({curve.setting for curve in curves}) > 1
    for curve in curves:
        label = f"{curve.label}, {curve.setting}" if several else curve.label
        mean = [m * scale for m in curve.mean]
        if len(curve.steps) == 1:
            ax.axhline(mean[0], ls=next(line_styles), color="gray", label=label)
            continue
        err = [e * scale for e in curve.error] if curve.error else None
        ax.errorbar(curve.steps, mean, yerr=err, marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel("gradient steps at test time")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def grouped_lines(
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """One line per series over named groups on the x axis (e.g. accuracy by number of ways)."""
    fig = new_figure(5.2, 3.8)
    ax = fig.subplots()
    for label, values in series.items():
        ax.plot(range(len(groups)), values, marker="o", ms=4, label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)


LABELS = {
    "meta/query_loss": "query loss after adaptation",
    "inner/support_loss_pre": "support loss before adaptation",
    "meta/accuracy": "query accuracy after adaptation",
    "val/accuracy": "validation classes, accuracy after the test-time steps",
    "returns/pre_adaptation": "return before adaptation",
    "returns/post_adaptation": "return after adaptation",
}
"""How the learning curves name the metrics.jsonl keys."""


def learning_curve(
    metrics: Sequence[dict[str, Any]],
    keys: Sequence[str],
    path: Path,
    ylabel: str,
    log_y: bool = False,
) -> Path:
    """``keys`` of ``metrics.jsonl`` against the meta-iteration (training batches)."""
    fig = new_figure(5.2, 3.8)
    ax = fig.subplots()
    for key in keys:
        points = [(m["iteration"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=LABELS.get(key, key))
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)
