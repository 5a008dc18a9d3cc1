"""``metarl bench``: the benchmark suite — quality against the paper, speed side by side.

Two suites share one list of benchmarks (:mod:`metarl.benchmarks.registry`):

* ``quick`` — every pipeline at a tiny budget (minutes in total on a 2-core CPU): a smoke check
  for CI that asserts finite numbers and that adaptation improves on the pre-update value;
* ``paper`` — the full protocols (the experiments' YAML configs unchanged). They take hours, so
  the runs live in ``<runs_dir>/paper/<name>`` and every invocation resumes where the last one
  stopped (``--time-limit`` ends training where a log window ends, with a checkpoint there; an
  interruption keeps the last checkpoint; the report then shows the run as in progress
  with the numbers of its latest checkpoint).

This module only orchestrates: :mod:`~metarl.benchmarks.runner` runs the commands,
:mod:`~metarl.benchmarks.collect` reads the results and judges them,
:mod:`~metarl.benchmarks.speed` measures speed, :mod:`~metarl.benchmarks.report` writes
``BENCHMARKS.md``, ``benchmarks.json``, the dated history and the README block.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from metarl.benchmarks.collect import (
    QualityResult,
    collect_quality,
    paper_cell,
    problems,
    verdict,
)
from metarl.benchmarks.registry import QUALITY, SUITES
from metarl.benchmarks.runner import run_quality
from metarl.benchmarks.speed import SPEED, TIME_TO, BenchmarkUnavailable, stored_time_to
from metarl.config import ConfigError
from metarl.loop import session_deadline


def benchmark_names() -> list[str]:
    """Every name ``--only`` accepts."""
    return [b.name for b in QUALITY] + list(SPEED)


def _run_speed(
    selected: set[str], suite: str, deadline: float | None, root: Path
) -> tuple[dict[str, Any], bool]:
    """The selected speed benchmarks' results (or why not), and whether Ctrl-C stopped them."""
    attempted: dict[str, Any] = {}
    for name, fn in SPEED.items():
        if name not in selected:
            continue
        if deadline is not None and time.time() > deadline:
            attempted[name] = {"skipped": "time limit reached"}
            continue
        print(f"\n=== {name}", flush=True)
        try:
            result, table = fn(suite, root / name, deadline)
            attempted[name] = {"result": result, "table": table}
            print(table)
        except KeyboardInterrupt:
            return attempted, True
        except BenchmarkUnavailable as e:
            attempted[name] = {"skipped": str(e), "unavailable": True}
        except Exception as e:  # noqa: BLE001 - a failed benchmark is reported, not fatal
            attempted[name] = {"error": f"{type(e).__name__}: {e}"}
    return attempted, False


def run_suite(
    suite: str = "quick",
    only: list[str] | None = None,
    runs_dir: Path = Path("runs/bench"),
    report_dir: Path = Path("."),
    time_limit_minutes: float | None = None,
    report_only: bool = False,
    progress: bool = True,
) -> int:
    """Entry point of ``metarl bench``: run the suite, write the report, return the exit code."""
    from metarl.benchmarks.common import machine_info
    from metarl.benchmarks.report import latest_runs, write_report

    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; available: {', '.join(SUITES)}")
    unknown = sorted(set(only or []) - set(benchmark_names()))
    if unknown:
        raise ConfigError(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(benchmark_names())}"
        )
    if report_only and not runs_dir.is_dir():  # a mistyped path would report every row "not run"
        raise ConfigError(f"--report-only: {runs_dir} is not a directory of runs (--runs-dir)")
    latest_runs(report_dir)  # an unreadable earlier report is refused now, not after hours
    selected = set(only) if only else set(benchmark_names())
    deadline = session_deadline(time_limit_minutes)
    started = time.time()
    root = runs_dir / suite
    interrupted = False

    # --- quality: train (or resume) and evaluate each selected benchmark ---------------------
    results = []
    for bench in QUALITY:
        if bench.name not in selected:
            continue
        ran = False
        # Past the deadline the paper suite still evaluates what is there (`--time-limit 0`);
        # the quick suite stops.
        within = deadline is None or time.time() < deadline or suite == "paper"
        if not (report_only or interrupted) and within:
            if suite == "quick" and (root / bench.name).exists():
                shutil.rmtree(root / bench.name)  # a quick run is a fresh smoke check
            ran = True
            try:
                run_quality(bench, suite, root / bench.name, deadline, progress)
            except KeyboardInterrupt:  # report what exists; the next call resumes
                print(f"\ninterrupted during {bench.name}", file=sys.stderr)
                interrupted = True
        if suite == "quick" and not report_only and not ran:  # never an earlier run's numbers
            note = "interrupted" if interrupted else "time limit reached"
            results.append(QualityResult(bench.name, bench.experiment, "not run", note=note,
                                         paper=paper_cell(bench.paper)))  # fmt: skip
        else:
            results.append(collect_quality(bench, root / bench.name, suite))

    # --- speed, side by side ----------------------------------------------------------------
    attempted: dict[str, Any] = {}
    if not (report_only or interrupted):
        attempted, interrupted = _run_speed(selected, suite, deadline, root)
    if suite == "paper":  # the hours-long ones not run to the end: the rows their runs hold
        for name in sorted(selected & TIME_TO.keys()):
            entry = attempted.get(name, {})
            if "result" in entry or "error" in entry or "unavailable" in entry:
                continue  # measured by this call, failed, or cannot run here
            stored = stored_time_to(name, root / name)
            if stored is not None:
                attempted[name] = {"result": stored[0], "table": stored[1]}

    # --- the report: this call's results over the latest ones --------------------------------
    previous = latest_runs(report_dir).get(suite, {})
    speed: dict[str, Any] = dict(previous.get("speed", {}))
    for name, entry in attempted.items():
        if "skipped" not in entry or "unavailable" in entry or name not in speed:
            speed[name] = entry  # a measurement skipped for time keeps the earlier one
    kept = {r["name"]: r for r in previous.get("quality", [])}
    kept.update({r.name: vars(r) for r in results})
    for bench in QUALITY:  # never reported before: a paper run's directory may hold results
        if bench.name not in kept:
            missing = QualityResult(bench.name, bench.experiment, "not run", note="not run yet",
                                    paper=paper_cell(bench.paper))  # fmt: skip
            kept[bench.name] = vars(
                collect_quality(bench, root / bench.name, suite) if suite == "paper" else missing
            )
    run = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": time.time() - started,
        "report_only": report_only,
        "only": sorted(only) if only else None,
        "machine": machine_info(),
        "quality": [kept[b.name] for b in QUALITY if b.name in kept],
        "speed": speed,
    }
    # The quick suite is a smoke check of everything selected: all of it must have run.
    found = problems(results, attempted, complete=suite == "quick" and not report_only)
    run["problems"] = found
    paths = write_report(run, report_dir, record=not report_only)
    print("\n" + "\n".join(f"wrote {p}" for p in paths))
    for p in found:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(verdict(suite, results, found, report_only, interrupted))
    if interrupted:
        return 130
    return 1 if found else 0
