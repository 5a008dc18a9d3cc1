"""``family-sinusoid``, ``family-omniglot``: the MAML family at the same time budget.

Each algorithm trains the experiment with its own recommended settings (:data:`ALGORITHMS`; the
model, tasks and meta-batch are the experiment's) on one thread until its share of time is
spent (config keys ``time_budget`` and ``budget_clock``: CPU seconds by default, so that other
work on a shared machine does not shorten one algorithm's budget). It is evaluated by
``metarl evaluate`` with the experiment's protocol (sinusoid: 600 fixed test tasks,
K = 5/10/20; Omniglot: 600 test episodes) after a quarter, half and all of the budget: one
training trajectory, resumed bit for bit between the points. Training and evaluation run as
child ``metarl`` commands, so each algorithm's peak memory is its own.

ProtoMAML and LEOPARD make their output layer from class prototypes: they apply to
classification only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from metarl.benchmarks.common import ONE_PASS, machine_info
from metarl.benchmarks.family_settings import ALGORITHMS, CLASSIFICATION_ONLY, settings_for

PROGRESS = "family.json"  # the points measured so far, for a resumed call
FRACTIONS = (0.25, 0.5, 1.0)
"""Where along the budget each algorithm is evaluated."""


def bench_family_budget(
    experiment: str,
    seconds: float,
    workdir: Path,
    evaluation: dict[str, Any] | None = None,
    fractions: tuple[float, ...] = FRACTIONS,
    algorithms: list[str] | None = None,
    resume: bool = False,
    common: dict[str, Any] | None = None,
    title: str | None = None,
    clock: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate each algorithm for ``seconds`` of ``experiment``.

    Args:
        experiment: a supervised experiment (``sinusoid``, ``omniglot-5w1s``, ...).
        seconds: each algorithm's training budget (seconds on ``clock``, one thread).
        workdir: where the runs go (emptied first).
        evaluation: evaluation overrides (``eval_tasks``, ``baseline_iterations``, ...; baselines
            are trained once and shared by every run).
        fractions: the shares of the budget after which each algorithm is evaluated.
        algorithms: names of :data:`ALGORITHMS` (default: every one that applies).
        resume: continue what an earlier call with the same experiment, budget and evaluation
            left in ``workdir`` (each evaluated point is kept; a run stopped mid-way resumes;
            an algorithm whose settings changed since is run again), instead of starting
            afresh.
        common: settings every algorithm adds (Meta-Dataset episodes: ``episodes``,
            ``sources``, ...), after its own.
        title: the comparison's name (default ``experiment``); the published number is
            looked up by it.
        clock: what the budget counts (config key ``budget_clock``): ``cpu``, the training
            process's CPU seconds, keeps the comparison far fairer when other work shares the
            machine (a wall budget gives whoever trains during a busy spell fewer
            iterations); ``wall``, seconds on the clock. Default: the clock of the stored
            comparison being resumed (one stored without ``clock`` was measured on the
            wall), else ``cpu``, so a resumed call never discards measured points.
        workers: how many algorithms train at once, each a one-thread child process
            (default: one per core). On the CPU clock a busy core shortens no algorithm's
            budget; sharing memory bandwidth makes each CPU second a few percent slower for all.

    Returns:
        ``{"experiment", "budget_s", "metric", "higher_is_better", "scale", "machine",
        "rows": {name: {"points": [{"seconds", "iterations", "scores": {setting: {"steps",
        "mean", "error"}}}, ...], "peak_mib", "settings"}}, "pretrained": {setting: ...}}``.
    """
    from metarl.benchmarks.runner import run_child
    from metarl.reports import read_report
    from metarl.run import CHECKPOINT

    if algorithms is None:
        regression = experiment.startswith("sinusoid")
        algorithms = [a for a in ALGORITHMS if not (regression and a in CLASSIFICATION_ONLY)]
    progress = workdir / PROGRESS
    settings = {
        alg: {**values, **(common or {})} for alg, values in settings_for(experiment).items()
    }
    stored = json.loads(progress.read_text()) if resume and progress.exists() else None
    workers = workers or os.cpu_count() or 1
    if clock is None:
        clock = stored.get("clock", "wall") if stored is not None else "cpu"
    result: dict[str, Any] = {"experiment": experiment, "title": title or experiment,
                              "budget_s": seconds, "clock": clock, "rows": {},
                              "pretrained": {}, "evaluation": evaluation or {},
                              "settings": settings, "machine": machine_info()}  # fmt: skip
    same = ("experiment", "budget_s", "evaluation", "clock")
    if stored is not None and all(
        stored.get(k, "wall" if k == "clock" else None) == result[k] for k in same
    ):
        result.update(stored, machine=result["machine"], settings=settings)
    else:  # another comparison's runs would be resumed past this budget: start afresh
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    evaluation_sets = [f"{k}={v}" for k, v in (evaluation or {}).items()]
    shared_baselines = workdir / "baselines.pt"
    rows = {}
    for name in algorithms:
        row = result["rows"].get(name)
        if row is None or row.get("settings") != settings[name]:  # new, or changed: afresh
            shutil.rmtree(_run_dir(workdir, name), ignore_errors=True)
            row = {"points": [], "peak_mib": 0.0, "settings": settings[name]}
        row["points"] = [p for p in row["points"] if "error" not in p]
        rows[name] = row
    result["rows"] = {**rows, **{k: v for k, v in result["rows"].items() if k not in rows}}
    # Worker threads only wait on child processes; one lock orders what they share, and the
    # first evaluation holds another so that the baselines (shared by every algorithm) are
    # trained once while other algorithms go on training.
    shared, first_evaluation = threading.Lock(), threading.Lock()

    def extend(name: str) -> None:
        """Train ``name`` on to each share of the budget not yet measured, evaluating at each."""
        run_dir, row = _run_dir(workdir, name), rows[name]
        sets = [f"{k}={v}" for k, v in settings[name].items()]
        points = row["points"]
        for fraction in fractions[len(points) :]:
            budget = f"time_budget={seconds * fraction:g}"
            if not (run_dir / CHECKPOINT).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
                args = ["train", experiment, "--out", str(run_dir), "--set", *sets,
                        "num_threads=1", *ONE_PASS, f"budget_clock={clock}",
                        "tensorboard=false", budget]  # fmt: skip
            else:
                args = ["train", experiment, "--resume", str(run_dir), "--set", budget]
            child = run_child([*args, "--no-progress"])
            row["peak_mib"] = max(row["peak_mib"], child.peak_mib)
            if child.exit_code != 0:
                points.append({"error": f"training exited with {child.exit_code}"})  # not kept
                return
            with first_evaluation if not shared_baselines.exists() else nullcontext():
                if shared_baselines.exists():  # the baselines do not depend on the algorithm
                    shutil.copy(shared_baselines, run_dir / shared_baselines.name)
                evaluate = ["evaluate", str(run_dir), "--no-progress"]
                if run_child(
                    evaluate + (["--set", *evaluation_sets] if evaluation_sets else [])
                ).exit_code:
                    points.append({"error": "evaluation failed"})
                    return
                if not shared_baselines.exists() and (run_dir / shared_baselines.name).exists():
                    shutil.copy(run_dir / shared_baselines.name, shared_baselines)
            report = read_report(run_dir)
            assert report is not None
            elapsed = _elapsed(run_dir)
            with shared:
                result.update(metric=report.metric, higher_is_better=report.higher_is_better,
                              scale=report.display_scale)  # fmt: skip
                if not result["pretrained"]:
                    result["pretrained"] = {c.setting: _at(c) for c in report.curves
                                            if c.method == "pretrained"}  # fmt: skip
                points.append({"seconds": elapsed[clock], "wall_seconds": elapsed["wall"],
                               "iterations": report.model.iteration,
                               "scores": {c.setting: _at(c) for c in report.curves
                                          if c.method == "meta_learned"}})  # fmt: skip
                progress.write_text(json.dumps(result))  # a later call continues from here

    with ThreadPoolExecutor(max(1, min(workers, len(algorithms)))) as pool:
        list(pool.map(extend, algorithms))  # re-raises a worker's exception here
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    return result


def _at(curve: Any) -> dict[str, list[float]]:
    """The curve after one step and after the last step."""
    picked = [min(1, len(curve.mean) - 1), len(curve.mean) - 1]
    error = curve.error or [math.nan] * len(curve.mean)
    return {"steps": [curve.steps[i] for i in picked], "mean": [curve.mean[i] for i in picked],
            "error": [error[i] for i in picked]}  # fmt: skip


def _run_dir(workdir: Path, name: str) -> Path:
    """Where algorithm ``name`` trains."""
    return workdir / name.lower().replace(" ", "-").replace("+", "p")


def _elapsed(run_dir: Path) -> dict[str, float]:
    """The run's training seconds on each clock, from one read of its checkpoint."""
    from metarl.run import load_checkpoint

    state = load_checkpoint(run_dir)
    return {clock: float(state.get(key, math.nan))
            for clock, key in (("wall", "elapsed"), ("cpu", "cpu_elapsed"))}  # fmt: skip


def _on_cpu(result: dict[str, Any]) -> bool:
    """Whether the comparison's budget counted CPU seconds (stored ones without: the wall)."""
    return result.get("clock", "wall") == "cpu"


def _budget_words(result: dict[str, Any]) -> str:
    """How the budget was counted, for the table and the plot."""
    return "CPU s" if _on_cpu(result) else "s"


def _cell(score: dict[str, list[float]], scale: float) -> str:
    """``after 1 step \\| after the last`` (a non-finite mean: some test task diverged)."""

    def one(i: int) -> str:
        mean, error = score["mean"][i] * scale, score["error"][i] * scale
        if not math.isfinite(mean):
            return "diverged"
        digits = 1 if scale != 1.0 else 3
        return f"{mean:.{digits}f}" + (f" ± {error:.{digits}f}" if math.isfinite(error) else "")

    return f"{one(0)} \\| {one(1)}"


def format_family_budget(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table, each algorithm at its full budget."""
    from metarl.references import PAPER

    scale = result.get("scale") or 1.0
    settings = sorted({s for row in result["rows"].values() for p in row["points"]
                       for s in p.get("scores", {})}, key=_setting_order)  # fmt: skip
    steps = next((p["scores"][s]["steps"] for row in result["rows"].values()
                  for p in row["points"] for s in p.get("scores", {})), [1, 10])  # fmt: skip
    title = result.get("title", result["experiment"])
    paper = PAPER.get(title)
    published = f" Published: {paper.value} ± {paper.err} ({paper.source})." if paper else ""
    lines = [
        f"{title}, {result['budget_s']:g} {_budget_words(result)} of training per algorithm on "
        f"one thread; {result.get('metric', 'score')} after {steps[0]} \\| {steps[1]} steps "
        f"(95% interval).{published} Schedules (MAML++'s cosine meta-lr and loss annealing, "
        "Reptile's linear ε) run over the experiment's `iterations`, so within a short budget "
        "they barely anneal.",
        "",
        "| algorithm | " + " | ".join(s or "score" for s in settings)
        + f" | iterations | {_budget_words(result)} / iteration | peak memory |",
        "|---|" + "---|" * (len(settings) + 3),
    ]  # fmt: skip
    for name, row in result["rows"].items():
        last = row["points"][-1] if row["points"] else {"error": "not run"}
        if "error" in last:
            lines.append(f"| {name} | {last['error']} |" + " |" * (len(settings) + 2))
            continue
        cells = [_cell(last["scores"][s], scale) for s in settings]
        per_iteration = last["seconds"] / max(last["iterations"], 1)
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {last['iterations']:,} | {per_iteration * 1e3:.1f} ms"
                     f" | {row['peak_mib']:.0f} MiB |")  # fmt: skip
    if result["pretrained"]:
        cells = [_cell(result["pretrained"][s], scale) for s in settings]
        lines.append("| pretrained (fine-tuned) | " + " | ".join(cells) + " | – | – | – |")
    return "\n".join(lines)


def _setting_order(setting: str) -> tuple[int, str]:
    digits = "".join(ch for ch in setting if ch.isdigit())
    return (int(digits) if digits else 0, setting)


def plot_family_budget(result: dict[str, Any], path: Path) -> Path:
    """The score after one step against training seconds, one line per algorithm (sinusoid:
    K=10's MSE on a log scale)."""
    from metarl.plots import new_figure, save

    scale = result.get("scale") or 1.0
    fig = new_figure(8.0, 4.2)
    ax = fig.subplots()
    for name, row in result["rows"].items():
        points = [p for p in row["points"] if "error" not in p]
        if not points:
            continue
        scores = points[0]["scores"]
        setting = next((s for s in ("K=10", "all") if s in scores), next(iter(scores)))
        ax.plot([p["seconds"] for p in points],
                [p["scores"][setting]["mean"][0] * scale for p in points],
                marker="o", label=name)  # fmt: skip
    ax.set_xlabel(f"training time ({_budget_words(result)}, one thread)")
    label = result.get("metric", "score") + (
        " (K=10)" if result["experiment"] == "sinusoid" else ""
    )
    ax.set_ylabel(f"{label},\nafter 1 step")  # two lines: a long metric name fits
    if not result.get("higher_is_better", False):
        ax.set_yscale("log")
    equal = "CPU time" if _on_cpu(result) else "wall-clock"
    ax.set_title(f"The MAML family on {result.get('title', result['experiment'])} at equal "
                 f"{equal}")  # fmt: skip
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # off the data
    return save(fig, path)
