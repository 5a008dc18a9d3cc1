"""``family-sinusoid``: the MAML family on sinusoid regression at the same wall-clock budget.

Each algorithm trains ``sinusoid`` with its own recommended settings (:data:`ALGORITHMS`; the
regressor, tasks and meta-batch are the experiment's) on one thread until its share of time is
spent (config key ``time_budget``), and is evaluated by ``metarl evaluate`` (600 fixed test
tasks, K = 5/10/20, MSE after 1 and 10 steps) after a quarter, half and all of the budget: one
training trajectory, resumed bit for bit between the three points. Training and evaluation run
as child ``metarl`` commands, so each algorithm's peak memory is its own.

ProtoMAML and LEOPARD make their output layer from class prototypes: they apply to
classification only and are not in the regression table.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

from metarl.benchmarks.common import machine_info

ALGORITHMS: dict[str, dict[str, Any]] = {
    "MAML": {},
    "first-order MAML": {"meta_gradient": "first_order"},
    "Meta-SGD": {"algorithm": "meta_sgd"},
    "ANIL": {"algorithm": "anil"},
    "MAML++": {"algorithm": "maml_plus_plus", "inner_steps": 5, "meta_lr_schedule": "cosine"},
    "Reptile": {"algorithm": "reptile", "meta_optimizer": "sgd", "meta_lr": 1.0,
                "meta_lr_schedule": "linear", "inner_steps": 5},
    "iMAML": {"algorithm": "imaml", "inner_steps": 10, "imaml_lambda": 2.0},
}  # fmt: skip
"""Each algorithm's settings on top of ``sinusoid.yaml`` (docs/algorithms.md)."""

FRACTIONS = (0.25, 0.5, 1.0)
"""Where along the budget each algorithm is evaluated."""


def bench_family_budget(
    seconds: float,
    workdir: Path,
    eval_tasks: int = 600,
    baseline_iterations: int | None = None,
    fractions: tuple[float, ...] = FRACTIONS,
) -> dict[str, Any]:
    """Train and evaluate every algorithm of :data:`ALGORITHMS` for ``seconds`` each.

    Args:
        seconds: each algorithm's training budget (wall seconds, one thread).
        workdir: where the runs go (emptied first).
        eval_tasks: test tasks of each evaluation.
        baseline_iterations: the pretrained and oracle regressors' iterations (trained once,
            shared by every run; default the experiment's).
        fractions: the shares of the budget after which each algorithm is evaluated.

    Returns:
        ``{"budget_s", "machine", "rows": {name: {"points": [{"seconds", "iterations",
        "mse": {"K=5": [step0, step1, step10], ...}}...], "peak_mib", "settings"}}, "pretrained":
        {...}}``.
    """
    from metarl.benchmarks.runner import run_child
    from metarl.reports import read_report

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    shared_baselines: Path | None = None
    rows: dict[str, Any] = {}
    pretrained: dict[str, list[float]] = {}
    for name, settings in ALGORITHMS.items():
        run_dir = workdir / name.lower().replace(" ", "-").replace("+", "p")
        sets = [f"{k}={v}" for k, v in settings.items()] + ["num_threads=1", "tensorboard=false"]
        if baseline_iterations is not None:
            sets.append(f"baseline_iterations={baseline_iterations}")
        points, peak = [], 0.0
        for fraction in fractions:
            budget = f"time_budget={seconds * fraction:g}"
            if not points:
                args = ["train", "sinusoid", "--out", str(run_dir), "--set", *sets, budget]
            else:
                args = ["train", "sinusoid", "--resume", str(run_dir), "--set", budget]
            child = run_child([*args, "--no-progress"])
            peak = max(peak, child.peak_mib)
            if child.exit_code != 0:
                points.append({"error": f"training exited with {child.exit_code}"})
                break
            if shared_baselines is not None:  # the baselines do not depend on the algorithm
                shutil.copy(shared_baselines, run_dir / shared_baselines.name)
            evaluation = ["evaluate", str(run_dir), "--no-progress", "--set",
                          f"eval_tasks={eval_tasks}"]  # fmt: skip
            if run_child(evaluation).exit_code != 0:
                points.append({"error": "evaluation failed"})
                break
            if shared_baselines is None:
                shared_baselines = workdir / "baselines.pt"
                shutil.copy(run_dir / "baselines.pt", shared_baselines)
            report = read_report(run_dir)
            assert report is not None
            mse = {c.setting: _at_steps(c) for c in report.curves if c.method == "meta_learned"}
            if not pretrained:
                pretrained = {c.setting: _at_steps(c) for c in report.curves
                              if c.method == "pretrained"}  # fmt: skip
            points.append({"seconds": _elapsed(run_dir),
                           "iterations": report.model.iteration, "mse": mse})  # fmt: skip
        rows[name] = {"points": points, "peak_mib": peak, "settings": settings}
    return {
        "budget_s": seconds,
        "eval_tasks": eval_tasks,
        "machine": machine_info(),
        "rows": rows,
        "pretrained": pretrained,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _at_steps(curve: Any) -> list[float]:
    """The mean MSE before adaptation, after 1 step and after the last step."""
    return [curve.mean[0], curve.mean[min(1, len(curve.mean) - 1)], curve.mean[-1]]


def _elapsed(run_dir: Path) -> float:
    from metarl.run import load_checkpoint

    return float(load_checkpoint(run_dir).get("elapsed", math.nan))


def _mse(value: float) -> str:
    """A table cell: the mean MSE, or "diverged" when some test task's loss is not finite."""
    return f"{value:.3f}" if math.isfinite(value) else "diverged"


def format_family_budget(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (each algorithm at its full budget)."""
    from metarl.references import PAPER

    shots = ("K=5", "K=10", "K=20")
    paper = PAPER["sinusoid"]
    lines = [
        f"Sinusoid, {result['budget_s']:g} s of training per algorithm on one thread, "
        f"{result['eval_tasks']} test tasks; MSE after 1 \\| 10 steps. Published, MAML, K=10, "
        f"1 step, after 70,000 iterations: {paper.value} ± {paper.err} ({paper.source}).",
        "",
        "| algorithm | "
        + " | ".join(f"{k}: 1 \\| 10 steps" for k in shots)
        + " | iterations | s / iteration | peak memory |",
        "|---|" + "---|" * (len(shots) + 3),
    ]
    for name, row in result["rows"].items():
        last = row["points"][-1] if row["points"] else {"error": "not run"}
        if "error" in last:
            lines.append(f"| {name} | {last['error']} |" + " |" * (len(shots) + 2))
            continue
        cells = [f"{_mse(last['mse'][k][1])} \\| {_mse(last['mse'][k][2])}" for k in shots]
        per_iteration = last["seconds"] / max(last["iterations"], 1)
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {last['iterations']:,} | {per_iteration * 1e3:.1f} ms"
                     f" | {row['peak_mib']:.0f} MiB |")  # fmt: skip
    if result["pretrained"]:
        cells = [f"{_mse(result['pretrained'][k][1])} \\| {_mse(result['pretrained'][k][2])}"
                 for k in shots]  # fmt: skip
        lines.append("| pretrained (fine-tuned) | " + " | ".join(cells) + " | – | – | – |")
    return "\n".join(lines)


def plot_family_budget(result: dict[str, Any], path: Path, setting: str = "K=10") -> Path:
    """MSE after one step against training seconds, one line per algorithm (log scale)."""
    from metarl.plots import new_figure, save

    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    for name, row in result["rows"].items():
        points = [p for p in row["points"] if "error" not in p]
        if points:
            ax.plot([p["seconds"] for p in points], [p["mse"][setting][1] for p in points],
                    marker="o", label=name)  # fmt: skip
    ax.set_xlabel("training time (s, one thread)")
    ax.set_ylabel(f"MSE after 1 step ({setting})")
    ax.set_yscale("log")
    ax.set_title("The MAML family on sinusoid at equal wall-clock")
    ax.legend(fontsize=8)
    return save(fig, path)
