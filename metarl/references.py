"""The published numbers metarl is measured against, in one place, each with its source.

The evaluation shows an experiment's published curves beside its own (``paper:`` rows of the
results table); the benchmark suite compares its headline number with :attr:`PaperResult.value`
and, for meta-RL, the gap it closes with :attr:`PaperResult.gap_closed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.reports import Curve


@dataclass(frozen=True)
class PaperResult:
    """What a paper reports for one experiment.

    Attributes:
        source: where the numbers come from.
        value: the published counterpart of the benchmark's headline number, or None.
        err: its error bar as published (95% CI for the few-shot tables), or None.
        curves: published adaptation curves, shown beside the evaluation's own.
        gap_closed: meta-RL: the share of the random-init → oracle gap closed after one step in
            the paper's own data, for a comparison that does not depend on the simulator.
    """

    source: str
    value: float | None = None
    err: float | None = None
    curves: tuple[Curve, ...] = ()
    gap_closed: float | None = None


_OMNIGLOT = "Finn et al. 2017, Table 1"
_OMNIGLOT_FIRST_ORDER = "Finn et al. 2017, Table 1 (MAML, first order approx.)"
_LOCOMOTION = (
    "Finn et al. 2017, Fig. 5 (rllab's models: dt 0.01 HalfCheetah, 0.02 Ant; horizon 200; "
    "no table); gap closure from the paper's released data"
)

PAPER: dict[str, PaperResult] = {
    "sinusoid": PaperResult(
        "no table in the paper (Fig. 2-3); Li et al. 2017 (Meta-SGD), Table 1, MAML, 10-shot",
        0.77,
        0.11,
    ),
    "omniglot-5w1s": PaperResult(_OMNIGLOT, 98.7, 0.4),
    "omniglot-5w5s": PaperResult(_OMNIGLOT, 99.9, 0.1),
    "omniglot-20w1s": PaperResult(_OMNIGLOT, 95.8, 0.3),
    "omniglot-20w5s": PaperResult(_OMNIGLOT, 98.9, 0.2),
    "omniglot-5w1s-first-order": PaperResult(_OMNIGLOT_FIRST_ORDER, 98.3, 0.5),
    "omniglot-20w1s-first-order": PaperResult(_OMNIGLOT_FIRST_ORDER, 89.4, 0.5),
    "omniglot-20w1s-binary": PaperResult(_OMNIGLOT, 95.8, 0.3),  # the images of the paper's code
    "navigation": PaperResult(
        "Finn et al. 2017, Fig. 4 (the oracle is a goal-conditioned policy trained with TRPO)",
        -11.68,
        1.10,
        curves=(
            Curve("meta_learned", "MAML", [0, 1, 2], [-40.4, -11.68, -3.3]),
            Curve("oracle", "oracle", [0], [-2.3]),
        ),
    ),
    # (MAML after 1 step − random) / (oracle − random) in the paper's data.
    "halfcheetah-vel": PaperResult(_LOCOMOTION, gap_closed=0.88),
    "halfcheetah-dir": PaperResult(_LOCOMOTION, gap_closed=(293.2 - 21.8) / (442.7 - 21.8)),
    "ant-vel": PaperResult(_LOCOMOTION, gap_closed=(96.7 + 62.8) / (107.9 + 62.8)),
    "ant-dir": PaperResult(_LOCOMOTION, gap_closed=(499.1 - 9.2) / (524.8 - 9.2)),
    "ant-goal": PaperResult(_LOCOMOTION),
}
"""Published results by experiment name (a named variant of one: by its benchmark's name)."""


def paper_result(experiment: str) -> PaperResult | None:
    """The published result of ``experiment``, or None."""
    return PAPER.get(experiment)
