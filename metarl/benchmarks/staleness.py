"""When a stored evaluation no longer describes its run and must be written again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.reports import ReportError, read_report


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
    wants_best = state["config"].get("eval_model", "best") == "best" and state.get("best")
    if report.model.choice != ("best" if wants_best else "last"):
        return True
    return any((baselines / f"{m.kind}.pt").exists() for m in report.missing)
