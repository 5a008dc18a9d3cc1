"""``metarl evaluate`` for few-shot classification: accuracy after test-time adaptation.

Protocol (defaults in :class:`~metarl.supervised.classification_config.ClassificationConfig`,
the paper's): ``eval_episodes`` (600) fixed episodes of the meta-test classes drawn from
``eval_seed``; from the meta-trained θ, ``eval_inner_steps`` (10) gradient steps on each
episode's support set (step size ``eval_lr``, else ``inner_lr``); query accuracy after every
step. The reported number is the mean over episodes after the last step, ± the half-width of
the normal 95% confidence interval.

``eval.json`` schema::

    {"experiment": str, "iteration": int, "protocol": {...},
     "results": {"MAML": {"steps": [int], "mean": [float], "ci95": [float]}},
     "accuracy": float, "ci95": float, "seconds": float, "config": {...}}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from metarl.config import to_dict
from metarl.plots import adaptation_curves, learning_curve
from metarl.run import atomic_write_text, read_metrics, setup_cpu
from metarl.supervised.classification_config import ClassificationConfig
from metarl.supervised.classification_experiment import (
    accuracy_per_task,
    load_split,
    query_inputs,
)
from metarl.supervised.data.episodes import fixed_episodes
from metarl.supervised.finetune import finetune_curve, mean_ci95
from metarl.supervised.tasks import cross_entropy_per_task


def evaluate(
    config: ClassificationConfig,
    model: nn.Module,
    run_dir: Path,
    iteration: int,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol, write ``eval.json`` and the plots, and return the results.

    ``retrain_baselines`` and ``progress`` are accepted for the CLI's uniform call; this
    protocol has no baselines to train.
    """
    del retrain_baselines, progress
    started = time.time()
    setup_cpu(config.num_threads)
    model = model.cpu()
    classes = load_split(config, config.eval_subset)
    episodes = fixed_episodes(
        classes, config.eval_episodes, config.n_way, config.k_shot, config.test_k_query,
        config.eval_seed,
    )  # fmt: skip
    curve = finetune_curve(
        model, episodes, config.test_lr, config.eval_inner_steps, cross_entropy_per_task,
        accuracy_per_task, chunk_size=config.eval_chunk, query_inputs=query_inputs(config),
    )  # fmt: skip
    mean, ci = mean_ci95(curve)
    steps = list(range(config.eval_inner_steps + 1))
    report = {
        "experiment": config.experiment,
        "iteration": iteration,
        "protocol": {
            "episodes": config.eval_episodes,
            "eval_seed": config.eval_seed,
            "classes": f"{config.dataset} {config.eval_subset} ({classes.n_classes} classes)",
            "n_way": config.n_way,
            "k_shot": config.k_shot,
            "k_query": config.test_k_query,
            "inner_steps": config.eval_inner_steps,
            "step_size": config.test_lr,
            "bn_policy": config.bn_policy,
            "metric": "query accuracy",
        },
        "results": {"MAML": {"steps": steps, "mean": mean, "ci95": ci}},
        "accuracy": mean[-1],
        "ci95": ci[-1],
        "seconds": time.time() - started,
        "config": to_dict(config),
    }
    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=1))
    plots = run_dir / "plots"
    title = f"{config.dataset} {config.n_way}-way {config.k_shot}-shot"
    adaptation_curves(report["results"], plots / "accuracy_vs_steps.png", "query accuracy", title)
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(metrics, ["meta/accuracy"], plots / "learning_curve.png")
    return report


def results_table(report: dict[str, Any], steps: tuple[int, ...] = (0, 1, 10)) -> str:
    """A Markdown table: the setting, then accuracy (%) ± ci95 after the given steps."""
    p = report["protocol"]
    curve = report["results"]["MAML"]
    shown = [s for s in steps if s in curve["steps"]] or [curve["steps"][-1]]
    if curve["steps"][-1] not in shown:
        shown.append(curve["steps"][-1])
    header = "| experiment | N-way K-shot | iterations | " + " | ".join(
        f"{s} step{'s' if s != 1 else ''}" for s in shown
    )
    cells = [
        f"{100 * curve['mean'][curve['steps'].index(s)]:.1f} ± "
        f"{100 * curve['ci95'][curve['steps'].index(s)]:.1f}%"
        for s in shown
    ]
    return "\n".join(
        [
            header + " |",
            "|" + "---|" * (len(shown) + 3),
            f"| {report['experiment']} | {p['n_way']}-way {p['k_shot']}-shot | "
            f"{report['iteration']} | " + " | ".join(cells) + " |",
        ]
    )
