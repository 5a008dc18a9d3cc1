"""Figures shared by every experiment: adaptation curves and learning curves."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def adaptation_curves(
    results: dict[str, dict[str, Any]],
    path: Path,
    ylabel: str,
    title: str = "",
    log_y: bool = False,
) -> Path:
    """Metric vs gradient steps, one line per method, error bars from ``ci95`` or ``stderr``.

    ``results[method]`` has ``steps``, ``mean`` and ``ci95`` or ``stderr`` lists. A method with a
    single step (an oracle, evaluated without adaptation) is drawn as a gray horizontal line,
    dashed, dotted, ... in turn.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    line_styles = itertools.cycle(["--", ":", "-.", (0, (5, 1, 1, 1))])  # single-step methods
    for method, curve in results.items():
        err = curve.get("ci95", curve.get("stderr"))
        if len(curve["steps"]) == 1:
            ax.axhline(curve["mean"][0], ls=next(line_styles), color="gray", label=method)
            continue
        ax.errorbar(
            curve["steps"], curve["mean"], yerr=err, marker="o", ms=3, capsize=2, label=method
        )
    ax.set_xlabel("gradient steps at test time")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curve(
    metrics: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, log_y: bool = False
) -> Path:
    """``keys`` of ``metrics.jsonl`` against the iteration."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for key in keys:
        points = [(m["iteration"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel("meta-iteration")
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
