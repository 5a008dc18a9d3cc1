"""``metarl evaluate`` for few-shot classification: accuracy after test-time adaptation.

Protocol (defaults in :class:`~metarl.supervised.config.ClassificationConfig`, the paper's):
``eval_tasks`` (600) fixed episodes of the meta-test classes drawn from ``eval_seed``; from the
meta-trained θ, ``eval_steps`` (10) adaptation steps on each episode's support set (the
algorithm's step size, or ``eval_lr``); query accuracy after every step. The reported number is
the mean over episodes after the last step, ± the half-width of the normal 95% confidence
interval.
"""

from __future__ import annotations

import time
from pathlib import Path

from metarl.algorithms import LABELS
from metarl.config import to_dict
from metarl.plots import adaptation_curves, learning_curve
from metarl.reports import Curve, EvalReport, Headline, ModelChoice, write_report
from metarl.run import load_checkpoint, read_metrics
from metarl.runtime import set_num_threads
from metarl.supervised.adaptation import adaptation_curve, step_size_used
from metarl.supervised.checkpoint import restore
from metarl.supervised.classification_experiment import build_model, load_split, problem
from metarl.supervised.config import ClassificationConfig
from metarl.supervised.data.episodes import fixed_episodes


def evaluate(
    config: ClassificationConfig,
    run_dir: Path,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> EvalReport:
    """Run the protocol on the run's model, write ``eval.json`` and the plots.

    ``retrain_baselines`` is accepted for the CLI's uniform call; this protocol has no
    baselines to train. ``progress`` shows a bar over the chunks of test episodes.
    """
    del retrain_baselines
    started = time.time()
    set_num_threads(config.num_threads)
    state = load_checkpoint(run_dir)
    model, algorithm = restore(config, state, build_model(config))
    classes = load_split(config, config.eval_subset)
    episodes = fixed_episodes(
        classes, config.eval_tasks, config.n_way, config.k_shot, config.test_k_query,
        config.eval_seed,
    )  # fmt: skip
    values = adaptation_curve(
        algorithm, model, episodes, problem(config), config.eval_steps, config.eval_lr,
        chunk_size=config.eval_chunk, progress=progress,
    )  # fmt: skip
    curve = Curve.from_samples("meta_learned", LABELS[config.algorithm], values, "ci95")
    last = config.eval_steps
    report = EvalReport(
        experiment=config.experiment,
        family="classification",
        metric="query accuracy",
        higher_is_better=True,
        error_bar="ci95",
        curves=[curve],
        headline=Headline(f"accuracy after {last} steps", "meta_learned", last),
        model=ModelChoice("last", state["iteration"], state["iteration"]),
        protocol={
            "episodes": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "classes": f"{config.dataset} {config.eval_subset} ({classes.n_classes} classes)",
            "n_way": config.n_way,
            "k_shot": config.k_shot,
            "k_query": config.test_k_query,
            "steps": config.eval_steps,
            "step_size": step_size_used(config, algorithm),
            "bn_policy": config.bn_policy,
        },
        seconds=time.time() - started,
        config=to_dict(config),
        display_scale=100.0,
        decimals=1,
        table_steps=sorted({0, min(1, last), last}),
    )
    write_report(report, run_dir)
    plots = run_dir / "plots"
    title = f"{config.dataset} {config.n_way}-way {config.k_shot}-shot"
    adaptation_curves([curve], plots / "accuracy_vs_steps.png", "query accuracy", title)
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(
            metrics, ["meta/accuracy"], plots / "learning_curve.png", "accuracy (training batches)"
        )
    return report
