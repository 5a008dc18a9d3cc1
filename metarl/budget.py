"""How far a run is through its budget: of iterations (epochs for ordinary training), and of
time where it has a time budget."""

from __future__ import annotations

from typing import Any


def short_of_budget(state: dict[str, Any], config: Any) -> bool:
    """Whether a run's checkpoint ``state`` is short of the budget of ``config``: of
    iterations, and of the time budget, if it has one, on the budget's clock."""
    if state["iteration"] >= config.iterations:
        return False
    budget = getattr(config, "time_budget", 0.0)
    clock = "cpu_elapsed" if getattr(config, "budget_clock", "wall") == "cpu" else "elapsed"
    return not (budget and state.get(clock, 0.0) >= budget)


def progress_line(state: dict[str, Any], config: Any) -> str:
    """How far a run's checkpoint ``state`` is through the budget of ``config``, in the
    budget's unit: ``"1,200 of 60,000 iterations"``, ``"1 of 5 epochs"``."""
    unit = getattr(config, "BUDGET_UNIT", "iterations")  # a family's own config may lack it
    return f"{state['iteration']:,} of {config.iterations:,} {unit}"
