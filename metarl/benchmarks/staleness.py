"""When a stored evaluation no longer describes its run and must be written again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.reports import ReportError, read_report


def tested_model(state: dict[str, Any]) -> tuple[str, int | None]:
    """The model a run's protocol tests, from its checkpoint ``state``: ``("best", its
    iteration)`` when the config asks for the best model (``eval_model``, the paper's meta-RL
    choice) and the trainer kept one, else ``("last", the run's iteration)``."""
    best = state.get("best")
    if state.get("config", {}).get("eval_model", "best") == "best" and best:
        return "best", best["iteration"]
    return "last", state.get("iteration")


def needs_evaluation(run_dir: Path, state: dict[str, Any], baselines: Path) -> bool:
    """Whether ``run_dir/eval.json`` must be rewritten.

    It must when it is missing or of an older schema; when it was written at another checkpoint
    (any training since makes it stale, even when the best model did not change: the
    re-evaluation also redraws the learning curve); when it tested another model than the one
    the run's protocol tests (``eval_model``: the best one kept, or the last); or when a
    baseline it lacked has been trained since. ``state`` is the run's checkpoint.
    """
    try:
        report = read_report(run_dir)
    except ReportError:
        return True
    if report is None or report.model.checkpoint_iteration != state["iteration"]:
        return True
    if report.model.choice != tested_model(state)[0]:
        return True
    return any((baselines / f"{m.kind}.pt").exists() for m in report.missing)
