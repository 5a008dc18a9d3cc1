"""The quality benchmarks: which experiments the suites run, at what budget, against what.

The paper's numbers themselves live in :mod:`metarl.references` (one place, shared with the
evaluation's tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metarl.benchmarks.family_settings import settings_for
from metarl.references import PaperResult, paper_result

SUITES = ("quick", "paper")


@dataclass(frozen=True)
class QualityBenchmark:
    """One experiment trained and evaluated with the standard commands.

    Attributes:
        name: benchmark name (``--only``).
        experiment: the experiment (a YAML in ``metarl/configs``).
        quick: config overrides of the quick suite (the paper suite uses the config as it is).
        baselines: meta-RL baselines trained (``metarl baseline``) before the paper evaluation.
        settings: overrides of both suites that make this benchmark a named variant of the
            experiment (first-order MAML: ``meta_gradient=first_order``); its published
            result is looked up by the benchmark's name.
    """

    name: str
    experiment: str
    quick: dict[str, Any]
    baselines: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def paper(self) -> PaperResult:
        """The published result (an empty one if the paper has none)."""
        key = self.name if self.settings else self.experiment
        return paper_result(key) or PaperResult("no published result")

    def overrides(self, suite: str) -> dict[str, Any]:
        """The config overrides of a fresh run in ``suite``."""
        return {**self.settings, **(self.quick if suite == "quick" else {})}


TINY_RL = {"eval_tasks": 10, "eval_episodes_per_task": 10, "checkpoint_every": 1}
_QUICK_CLS = {
    "iterations": 20,
    "meta_batch_size": 4,
    "eval_tasks": 40,
    "log_every": 10,
    "checkpoint_every": 20,
}
# Near-random locomotion policies give noisy returns (Ant's are near 0): evaluate on enough
# episodes that "one step improves on none" is a real check, not a coin flip.
_QUICK_LOCO = {
    "iterations": 2,
    "meta_batch_size": 4,
    "episodes_per_task": 5,
    **TINY_RL,
    "eval_tasks": 20,
    "eval_episodes_per_task": 20,
}
_RL_BASELINES = ("pretrained", "oracle")
_FIRST_ORDER = {"meta_gradient": "first_order"}
# The MAML script's Omniglot images were binary (docs/experiments/few-shot.md): the protocol on
# those, beside the antialiased default, to see whether they explain the 20-way gap
_BINARY = {"omniglot_resize": "nearest"}
# The two best of the family at equal time on Omniglot 5w1s (docs/algorithms.md), each with its
# settings of that comparison, to the full protocol
_FAMILY_5W1S = settings_for("omniglot-5w1s")
_PROTO_MAML, _ANIL = _FAMILY_5W1S["ProtoMAML"], _FAMILY_5W1S["ANIL"]

QUALITY: tuple[QualityBenchmark, ...] = (
    QualityBenchmark(
        "sinusoid", "sinusoid",
        {"iterations": 2000, "baseline_iterations": 2000, "eval_tasks": 100},
    ),
    QualityBenchmark("omniglot-5w1s", "omniglot-5w1s", _QUICK_CLS),
    QualityBenchmark("omniglot-5w5s", "omniglot-5w5s", _QUICK_CLS),
    QualityBenchmark("omniglot-20w1s", "omniglot-20w1s", _QUICK_CLS),
    QualityBenchmark("omniglot-20w5s", "omniglot-20w5s", _QUICK_CLS),
    QualityBenchmark("omniglot-5w1s-first-order", "omniglot-5w1s", _QUICK_CLS,
                     settings=_FIRST_ORDER),
    QualityBenchmark("omniglot-20w1s-first-order", "omniglot-20w1s", _QUICK_CLS,
                     settings=_FIRST_ORDER),
    QualityBenchmark("omniglot-20w1s-binary", "omniglot-20w1s", _QUICK_CLS, settings=_BINARY),
    QualityBenchmark("omniglot-5w1s-protomaml", "omniglot-5w1s", _QUICK_CLS,
                     settings=_PROTO_MAML),
    QualityBenchmark("omniglot-5w1s-anil", "omniglot-5w1s", _QUICK_CLS, settings=_ANIL),
    QualityBenchmark("mnist-5w1s", "mnist-5w1s", _QUICK_CLS),
    QualityBenchmark("mnist-5w5s", "mnist-5w5s", _QUICK_CLS),
    QualityBenchmark("fashion-mnist-5w1s", "fashion-mnist-5w1s", _QUICK_CLS),
    QualityBenchmark("fashion-mnist-5w5s", "fashion-mnist-5w5s", _QUICK_CLS),
    QualityBenchmark(
        "navigation", "navigation",
        {"iterations": 3, "meta_batch_size": 10, "episodes_per_task": 10, **TINY_RL},
        _RL_BASELINES,
    ),
    QualityBenchmark("halfcheetah-vel", "halfcheetah-vel", _QUICK_LOCO, _RL_BASELINES),
    QualityBenchmark("halfcheetah-dir", "halfcheetah-dir", _QUICK_LOCO, _RL_BASELINES),
    QualityBenchmark("ant-vel", "ant-vel", _QUICK_LOCO, _RL_BASELINES),
    QualityBenchmark("ant-dir", "ant-dir", _QUICK_LOCO, _RL_BASELINES),
    QualityBenchmark("ant-goal", "ant-goal", _QUICK_LOCO, _RL_BASELINES),
)  # fmt: skip
