"""How much of the gap from a random policy to an oracle a meta-learned policy closes.

Meta-RL returns have no common scale (a HalfCheetah's return is not an Ant's, and our gymnasium
v5 dynamics are not the paper's), so a meta-RL benchmark row is judged by where MAML's return
after adaptation lands between two references measured the same way on the same test tasks: a
randomly initialised policy adapted with the same steps (R) and an oracle that sees the task
(O). The share of that gap MAML closes,

    g = (M − R) / (O − R),

is comparable across implementations and with the share in the paper's released data (Finn,
Abbeel & Levine, ICML 2017: 88% on HalfCheetah-vel); :data:`metarl.references.PAPER` holds the
paper's shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metarl.reports import ERROR_BAR_SCALE, ErrorBar, EvalReport


def share_closed(maml: float, random: float, oracle: float) -> float:
    """``g = (M − R) / (O − R)``: 0 at the random-init return, 1 at the oracle's."""
    return (maml - random) / (oracle - random)


def paired_error(maml: torch.Tensor, random: torch.Tensor, oracle: torch.Tensor) -> float:
    """Standard error of :func:`share_closed` of the means ``M, R, O`` of per-task returns
    ``(n,)`` on the same ``n ≥ 2`` test tasks, to first order (the delta method).

    ``ĝ − g ≈ mean_i(e_i) / (O − R)`` with ``e_i = (m_i − r_i) − g (o_i − r_i)``, so
    ``σ_g = std(e) / (√n (O − R))`` (std with ddof 1; in standard errors, not 95% intervals).
    Pairing matters: a task that is hard for one method is usually hard for all, and that
    shared part cancels in ``e_i``.

    Raises:
        ValueError: fewer than two tasks, or no positive gap ``O − R``.
    """
    m, r, o = (x.double() for x in (maml, random, oracle))
    gap = (o.mean() - r.mean()).item()
    if len(m) < 2 or not gap > 0:
        raise ValueError(f"a paired error needs two tasks or more and O − R > 0 (n={len(m)}, "
                         f"O − R = {gap:.4g})")  # fmt: skip
    g = share_closed(m.mean().item(), r.mean().item(), o.mean().item())
    e = (m - r) - g * (o - r)
    return e.std().item() / (len(e) ** 0.5 * gap)


def independent_error(
    share: float, gap: float, maml_error: float, random_error: float, oracle_error: float
) -> float:
    """Error of :func:`share_closed` from the three means' errors taken as independent, to
    first order: ``σ_g = √(σ_M² + g² σ_O² + (1 − g)² σ_R²) / (O − R)`` (``gap = O − R``).

    The result is in the units of the three error bars given (standard errors or 95% intervals
    alike). It can err either way when the methods share the test tasks; :func:`paired_error` is
    the one to use when per-task returns are at hand."""
    variance = maml_error**2 + share**2 * oracle_error**2 + (1.0 - share) ** 2 * random_error**2
    return math.sqrt(variance) / gap


@dataclass(frozen=True)
class GapShare:
    """A report's share of the random-init → oracle gap, ready to print.

    Attributes:
        closed: the share ``g`` (0 = random init's return, 1 = the oracle's).
        error: its error bar in ``error_bar`` units, or None without the errors it needs.
        paired: whether ``error`` paired the methods task by task (:func:`paired_error`)
            rather than taking the three means as independent (:func:`independent_error`).
        steps: the adaptation steps it is measured after (the report's headline step).
        method_label: the meta-learned curve's label (``"MAML"``).
        oracle_label: the oracle's label (``"oracle (PPO)"``).
        error_bar: ``stderr`` or ``ci95``, as the report's.
    """

    closed: float
    error: float | None
    paired: bool
    steps: int
    method_label: str
    oracle_label: str
    error_bar: ErrorBar

    def __str__(self) -> str:
        """``"58 ± 13%"``; ``"91 ± 0.6%"`` for a bar under a point; ``"58%"`` without one."""
        if self.error is None:
            return f"{self.closed:.0%}"
        decimals = 1 if self.error < 0.01 else 0
        return f"{100 * self.closed:.0f} ± {100 * self.error:.{decimals}f}%"

    def line(self) -> str:
        """One line under a results table: ``"after 1 step MAML closes 58 ± 6% of the
        random-init → oracle (PPO) gap (± standard error, paired over the test tasks)"``."""
        bars = "standard errors" if self.error_bar == "stderr" else "95% intervals"
        basis = (f"± {bars[:-1]}, paired over the test tasks" if self.paired
                 else f"± from the three means' {bars}, taken as independent")  # fmt: skip
        steps = f"{self.steps} step{'' if self.steps == 1 else 's'}"
        return (f"after {steps} {self.method_label} closes {self} of the random-init → "
                f"{self.oracle_label} gap ({basis})")  # fmt: skip


def gap_share(report: EvalReport) -> GapShare | None:
    """The gap MAML closes at the report's headline step, with its error bar: paired over the
    test tasks where every curve kept its per-task returns (:attr:`Curve.per_task`), else from
    the means' error bars. None when the report lacks MAML, random init or the oracle it names
    (:attr:`EvalReport.gap_oracle`), or when the oracle does not beat random init."""
    oracle = None if report.gap_oracle is None else report.curve(report.gap_oracle)
    maml, random = report.curve("meta_learned"), report.curve("random_init")
    if oracle is None or maml is None or random is None:
        return None
    step = report.headline.step
    (m, s_m), (r, s_r), (o, s_o) = maml.at(step), random.at(step), oracle.at(0)
    if not o - r > 0:  # also a NaN return: no gap to measure
        return None
    closed = share_closed(m, r, o)
    tasks = maml.tasks_at(step), random.tasks_at(step), oracle.tasks_at(0)
    paired = all(t is not None and len(t) == len(tasks[0] or []) > 1 for t in tasks)
    if paired:
        error: float | None = ERROR_BAR_SCALE[report.error_bar] * paired_error(
            *(torch.tensor(t, dtype=torch.float64) for t in tasks)
        )
    elif s_m is None or s_r is None or s_o is None:
        error = None
    else:  # already in the report's error-bar units
        error = independent_error(closed, o - r, s_m, s_r, s_o)
        error = error if math.isfinite(error) else None  # a NaN or infinite error bar
    return GapShare(closed, error, paired, step, maml.label, oracle.label, report.error_bar)


def gap_closed(report: EvalReport) -> float | None:
    """Just the share :func:`gap_share` measures, or None."""
    share = gap_share(report)
    return None if share is None else share.closed
