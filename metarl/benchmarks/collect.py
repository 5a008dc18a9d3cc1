"""Collecting a benchmark's result from its run directory, and the verdicts on it.

A :class:`QualityResult` is what the report shows of one quality benchmark; it is built from the
run's checkpoint, its ``bench.json`` and its typed ``eval.json`` (:class:`~metarl.reports.
EvalReport`), whatever state the run is in. :func:`problems` decides what fails a suite run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarl.benchmarks.registry import QualityBenchmark
from metarl.benchmarks.runner import read_info
from metarl.gap import gap_share
from metarl.references import PaperResult
from metarl.reports import EvalReport, read_report
from metarl.results_table import results_table


@dataclass(frozen=True)
class Score:
    """The number a benchmark is judged by (from the report's headline)."""

    metric: str
    before: float  # the same metric before adaptation (step 0)
    value: float
    err: float
    higher_better: bool
    scale: float = 1.0  # displayed value = value * scale (accuracy in %)

    @classmethod
    def of(cls, report: EvalReport) -> Score:
        before, value, err = report.headline_values()
        return cls(report.headline.label, before, value, err, report.higher_is_better,
                   report.display_scale)  # fmt: skip


@dataclass
class QualityResult:
    """What the report needs of one quality benchmark (JSON-able through ``vars``)."""

    name: str
    experiment: str
    status: str  # "done", "in progress", "failed", "not run", "skipped" (no dataset here)
    note: str = ""
    iterations: int = 0
    target_iterations: int = 0
    wall_seconds: float | None = None
    seconds_per_iteration: float | None = None
    peak_memory_mib: float | None = None
    headline: dict[str, Any] | None = None  # vars(Score)
    paper: dict[str, Any] = field(default_factory=dict)  # {value, err, source}
    comparison: str = ""
    table: str = ""
    plots: list[str] = field(default_factory=list)
    evaluated: str = ""  # when eval.json was written (the history lists each evaluation once)
    evaluated_iteration: int = 0  # the checkpoint eval.json measured (may precede `iterations`)


def paper_cell(paper: PaperResult) -> dict[str, Any]:
    """The paper's number as the report stores it."""
    return {"value": paper.value, "err": paper.err, "source": paper.source}


def compare(score: Score, paper: PaperResult) -> str:
    """``"met"``, ``"missed by X"`` or why there is no comparison. Within both error bars of the
    paper's number counts as met."""
    if paper.value is None:
        return "no number in the paper"
    value = score.value * score.scale
    slack = (paper.err or 0.0) + score.err * score.scale
    gap = (paper.value - value) if score.higher_better else (value - paper.value)
    return "met" if gap <= slack else f"missed by {gap:.3g}"


def gap_verdict(report: EvalReport, paper: PaperResult) -> str:
    """Meta-RL: ``closes X ± E% of the random-init → oracle gap`` (with the paper's share if
    known); E is :attr:`metarl.gap.GapShare.error`, in the report's error-bar units."""
    share = gap_share(report)
    if share is None:
        return ""
    text = f"closes {share} of the random-init → oracle gap"
    return text + (f" (paper: {paper.gap_closed:.0%})" if paper.gap_closed is not None else "")


def validation_note(metrics: list[dict[str, Any]], up_to: int) -> str:
    """Where a run's validation accuracy stands at iteration ``up_to``: the last value and, if
    an earlier one was higher, the best: "validation 99.72% at 6,000 (best 99.80% at 5,000)".
    Empty for a run that does not validate. It is what tells a plateau from a rising curve."""
    points = [(m["iteration"], m["val/accuracy"]) for m in metrics  # a NaN is logged as text
              if isinstance(m.get("val/accuracy"), float) and math.isfinite(m["val/accuracy"])
              and m["iteration"] <= up_to]  # fmt: skip
    if not points:
        return ""
    (last_at, last), (best_at, best) = points[-1], max(points, key=lambda p: p[1])
    note = f"validation {100 * last:.2f}% at {last_at:,}"
    return note if best <= last else f"{note} (best {100 * best:.2f}% at {best_at:,})"


def collect_quality(bench: QualityBenchmark, run_dir: Path, suite: str) -> QualityResult:
    """The result of one quality benchmark from its run directory (whatever state it is in);
    anything unreadable makes it a failed row, never the end of the suite."""
    result = QualityResult(bench.name, bench.experiment, "not run", paper=paper_cell(bench.paper))
    try:
        _collect(bench, run_dir, suite, result)
    except Exception as e:  # noqa: BLE001 - one broken run must not hide the others
        result.status, result.note = "failed", f"cannot read the run: {type(e).__name__}: {e}"
    return result


def _collect(bench: QualityBenchmark, run_dir: Path, suite: str, result: QualityResult) -> None:
    from metarl.run import CHECKPOINT, load_checkpoint, read_metrics

    info = read_info(run_dir)
    failed = [f"metarl {k[:-5].replace('_', ' ')} exited with code {v}"
              for k, v in info.items() if k.endswith("_exit") and v != 0]  # fmt: skip
    if not (run_dir / CHECKPOINT).exists():
        result.note = "; ".join(failed) or info.get("skipped") or "not run yet"
        result.status = "failed" if failed else "skipped" if "skipped" in info else "not run"
        return
    state = load_checkpoint(run_dir)
    result.iterations, result.target_iterations = state["iteration"], state["config"]["iterations"]
    result.wall_seconds = state.get("elapsed")
    if result.wall_seconds and result.iterations:
        result.seconds_per_iteration = result.wall_seconds / result.iterations
    peaks = [info.get(k) for k in ("train_peak_mib", "eval_peak_mib") if info.get(k)]
    result.peak_memory_mib = max(peaks) if peaks else None
    report = read_report(run_dir)
    if failed or report is None:
        result.status = "failed"
        result.note = "; ".join(failed) or "no eval.json: the evaluation did not finish"
        return
    score = Score.of(report)
    result.headline = vars(score)
    result.table = results_table(report)
    # A quick-suite number is a smoke check at a tiny budget, not a result to hold to the paper.
    if suite == "paper":
        verdicts = [compare(score, bench.paper), gap_verdict(report, bench.paper)]
        result.comparison = "; ".join(v for v in verdicts if v)
    else:
        result.comparison = "quick budget"
    result.status = "done" if result.iterations >= result.target_iterations else "in progress"
    result.evaluated_iteration = report.model.checkpoint_iteration
    notes = []
    if report.model.choice == "best":  # the paper's for meta-RL, a deviation for few-shot
        notes.append(str(report.model))
    if result.evaluated_iteration != result.iterations:
        notes.append(f"evaluated at iteration {result.evaluated_iteration}")
    notes.append(validation_note(read_metrics(run_dir), result.iterations))
    result.note = "; ".join(n for n in notes if n)
    stamp = (run_dir / "eval.json").stat().st_mtime
    result.evaluated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    result.plots = sorted(str(p) for p in (run_dir / "plots").glob("*.png"))


def verdict(
    suite: str,
    results: list[QualityResult],
    found: list[str],
    report_only: bool = False,
    interrupted: bool = False,
) -> str:
    """The suite's outcome in one line, the last thing ``metarl bench`` prints: for the quick
    suite whether its smoke checks passed, for the paper suite where the selected rows stand
    against the papers (``found``: :func:`problems`)."""
    if found:
        return f"{suite} suite: FAILED, {len(found)} problem(s) listed above"
    if interrupted:
        return f"{suite} suite: interrupted; the report holds what had finished"
    counts: dict[str, int] = {}
    for r in results:
        if r.headline is None or suite == "quick":
            key = r.status
        else:
            key = ("met the paper" if r.comparison.startswith("met")
                   else "missed it" if r.comparison.startswith("missed")
                   else "without a number in the paper")  # fmt: skip
            key += " so far (in progress)" if r.status == "in progress" else ""
        counts[key] = counts.get(key, 0) + 1
    rows = ", ".join(f"{n} {key}" for key, n in counts.items()) or "no quality rows selected"
    if suite != "quick":
        return f"{suite} suite, {len(results)} row(s): {rows}"
    if report_only:
        return f"quick suite, report only (nothing ran): {rows}"
    checks = "finite numbers, no adaptation that hurts; the paper suite holds rows to the papers"
    return f"quick suite: passed ({rows}; tiny budgets: {checks})"


def problems(
    results: list[QualityResult], speed: dict[str, Any], complete: bool = False
) -> list[str]:
    """What makes a suite run fail: errors, non-finite numbers, adaptation that clearly hurts;
    with ``complete`` (the quick suite) also a benchmark that did not run to the end."""
    found = []
    for r in results:
        if r.status == "failed" or (complete and r.status not in ("done", "skipped")):
            found.append(f"{r.name}: {r.status}" + (f" ({r.note})" if r.note else ""))
        if r.headline is None:
            continue
        h = r.headline
        if not all(math.isfinite(h[k]) for k in ("before", "value", "err")):
            found.append(f"{r.name}: non-finite result {h}")
        # Worse than before by more than two standard errors: a tiny smoke budget (2 Ant
        # iterations) adapts at noise level, so "not better" alone would fail by chance.
        elif (h["before"] - h["value"]) * (1 if h["higher_better"] else -1) > 2.0 * h["err"]:
            found.append(
                f"{r.name}: adaptation makes it worse than the pre-update value beyond two "
                f"standard errors ({h['metric']}: {h['before']:.4g} before, "
                f"{h['value']:.4g} ± {h['err']:.2g} after)"
            )
    for name, entry in speed.items():
        if "error" in entry or (complete and "skipped" in entry and "unavailable" not in entry):
            found.append(f"{name}: {entry.get('error') or entry.get('skipped')}")
    return found
