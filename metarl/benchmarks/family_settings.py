"""The settings each algorithm of the family runs with in the family benchmarks: one table,
read by the benchmark registry and by the equal-budget comparison that trains them."""

from __future__ import annotations

from typing import Any

ALGORITHMS: dict[str, dict[str, Any]] = {
    "MAML": {},
    "first-order MAML": {"meta_gradient": "first_order"},
    "Meta-SGD": {"algorithm": "meta_sgd"},
    "ANIL": {"algorithm": "anil"},
    "MAML++": {"algorithm": "maml_plus_plus", "inner_steps": 5, "meta_lr_schedule": "cosine"},
    "ProtoMAML": {"algorithm": "proto_maml", "meta_gradient": "first_order"},
    "LEOPARD": {"algorithm": "leopard"},
    "Reptile": {"algorithm": "reptile", "meta_optimizer": "sgd", "meta_lr": 1.0,
                "meta_lr_schedule": "linear", "inner_steps": 5},
    "iMAML": {"algorithm": "imaml", "inner_steps": 10, "imaml_lambda": 2.0},
}  # fmt: skip
"""Each algorithm's settings on top of the experiment's YAML (docs/algorithms.md)."""

EXPERIMENT_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    # α = 0.01 and Adam's steps of about meta_lr = 0.001 each: the per-step sizes would change
    # by 10% an iteration and the 5-step inner loop diverges within 1,500 iterations (measured)
    # iMAML: plain inner steps diverge on some sinusoid task (docs/algorithms.md); halving a
    # task's step until its proximal loss falls does not, and λ = 10 keeps the problem solvable
    # in 10 steps of 0.02
    "sinusoid": {
        "MAML++": {"step_size_lr": 1e-4},
        "iMAML": {"imaml_solver": "safeguarded", "imaml_lambda": 10.0, "inner_lr": 0.02},
    },
    # Reptile's own few-shot recipe (Nichol et al. 2018, appendix): Adam with β1 = 0 and step
    # 0.001 in the inner loop; five SGD steps of MAML's α = 0.4 reached 55% on 5w1s
    **{
        experiment: {"Reptile": {"reptile_inner_optimizer": "adam", "inner_lr": 0.001}}
        for experiment in ("omniglot-5w1s", "omniglot-20w1s")
    },
}
"""Settings an experiment adds to :data:`ALGORITHMS` (deviations from the papers' values)."""


def settings_for(experiment: str) -> dict[str, dict[str, Any]]:
    """Each algorithm's settings on ``experiment``: :data:`ALGORITHMS` with the experiment's."""
    extra = EXPERIMENT_SETTINGS.get(experiment, {})
    return {name: {**values, **extra.get(name, {})} for name, values in ALGORITHMS.items()}


CLASSIFICATION_ONLY = ("ProtoMAML", "LEOPARD")
