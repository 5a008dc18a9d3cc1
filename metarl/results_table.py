"""The results table: an evaluation report as Markdown, the way ``metarl evaluate`` prints it
and BENCHMARKS.md shows it (every method after each shown step, the paper's numbers, missing
baselines, and a flag where test tasks diverged)."""

from __future__ import annotations

import math

from metarl.reports import GROWTH, EvalReport


def _cell(value: float, err: float | None, report: EvalReport) -> str:
    scale, decimals = report.display_scale, report.decimals
    if not math.isfinite(value):
        return f"{value}"
    text = f"{value * scale:.{decimals}f}"
    suffix = "%" if scale == 100.0 else ""
    return text + suffix if err is None else f"{text} ± {err * scale:.{decimals}f}{suffix}"


def results_table(report: EvalReport) -> str:
    """A Markdown table of every curve (and the paper's) at the report's ``table_steps``."""
    steps = report.table_steps or sorted({s for c in report.curves for s in c.steps})
    with_setting = any(c.setting for c in report.curves)
    head = (["setting"] if with_setting else []) + ["method"]
    head += [f"{s} step{'' if s == 1 else 's'}" for s in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(c, c.label) for c in report.curves]
    rows += [(c, f"paper: {c.label}") for c in report.references]
    for curve, label in rows:
        cells = [curve.setting] if with_setting else []
        cells.append(label)
        for s in steps:
            try:
                flag = (
                    " ‡"
                    if curve.grew and s in curve.steps and curve.grew[curve.steps.index(s)]
                    else ""
                )
                cells.append(_cell(*curve.at(s), report) + flag)
            except KeyError:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    # Only meta-RL reports a missing baseline, and its oracle is the PPO one (navigation's
    # analytic oracle, a row of its own, is always there).
    named = {"oracle": "oracle (PPO)"}
    lines += [f"not evaluated: {named.get(m.kind, m.kind)}: {m.reason}" for m in report.missing]
    lines += divergence_notes(report, steps)
    return "\n".join(lines)


def divergence_notes(report: EvalReport, steps: list[int]) -> list[str]:
    """One line per curve and shown step where test tasks' losses grew past :data:`GROWTH`x:
    how many, and the median beside the mean that they dominate."""
    notes = []
    for curve in report.curves:
        for s, count in zip(curve.steps, curve.grew):
            if count and s in steps:
                where = f"{curve.setting} " if curve.setting else ""
                i = curve.steps.index(s)
                median = _cell(curve.median[i], None, report)
                notes.append(
                    f"‡ {where}{curve.label} after {s} steps: {count} of the test tasks' losses "
                    f"grew more than {GROWTH:g}x (diverged); the median is {median}"
                )
    return notes
