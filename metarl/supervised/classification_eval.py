"""``metarl evaluate`` for few-shot classification: accuracy after test-time adaptation.

Protocol (defaults in :class:`~metarl.supervised.classification_config.ClassificationConfig`,
the paper's): ``eval_tasks`` (600) fixed episodes of the meta-test classes drawn from
``eval_seed``; from the meta-trained θ, ``eval_steps`` (10) adaptation steps on each episode's
support set (the algorithm's step size, or ``eval_lr``); query accuracy after every step. The
reported number is the mean over episodes after the last step, ± the half-width of the normal
95% confidence interval.

With ``episodes: meta_dataset``, the ``eval_tasks`` episodes are Meta-Dataset's (variable ways
and shots) over the ``eval_subset`` classes of each evaluated source, drawn from ``eval_seed``
and adapted one at a time; the report has one curve per source and one over all episodes (the
headline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from metarl.algorithms import LABELS, MetaAlgorithm, Problem
from metarl.algorithms.anil import nil_probabilities
from metarl.algorithms.heads import prototype_scores
from metarl.config import to_dict
from metarl.core import TaskBatch
from metarl.plots import adaptation_curves, grouped_lines, learning_curve
from metarl.reports import Curve, EvalReport, Headline, write_report
from metarl.run import load_checkpoint, read_metrics
from metarl.runtime import set_num_threads
from metarl.supervised.adaptation import adaptation_curve, step_size_used
from metarl.supervised.checkpoint import restore, tested_state
from metarl.supervised.classification_config import ClassificationConfig
from metarl.supervised.classification_experiment import (
    build_model,
    episode_spec,
    image_shape,
    load_split,
    problem,
    source_splits,
)
from metarl.supervised.data.episodes import fixed_episodes
from metarl.supervised.data.meta_dataset import sample_meta_dataset_episode
from metarl.supervised.tasks import accuracy_per_task


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
    state, chosen = tested_state(load_checkpoint(run_dir), config.eval_model)
    model, algorithm = restore(config, state, build_model(config))
    label, last = LABELS[config.algorithm], config.eval_steps
    if config.episodes == "meta_dataset":
        scores = meta_dataset_values(config, algorithm, model, progress)
        by_source = scores.values
        curves = per_source_curves("meta_learned", label, by_source)
        for method, by_source_probe in scores.probed.items():
            curves += per_source_curves(method, PROBES[method].label, by_source_probe, steps=[0])
        details = {"by_ways": accuracy_by_ways(scores, label, last)}
        headline = Headline(f"accuracy after {last} steps", "meta_learned", last, "all")
        shape = {"sources": config.training_sources, "eval_sources": config.evaluated_sources,
                 "episodes_per_source": {n: v.shape[1] for n, v in by_source.items()},
                 "max_ways": config.max_ways, "k_shot": "variable (Meta-Dataset)"}  # fmt: skip
        classes_note = f"{config.eval_subset} classes of {', '.join(by_source)}"
    else:
        classes = load_split(config, config.eval_subset)
        episodes = fixed_episodes(
            classes, config.eval_tasks, config.n_way, config.k_shot, config.test_k_query,
            config.eval_seed,
        )  # fmt: skip
        values = adaptation_curve(
            algorithm, model, episodes, problem(config), config.eval_steps, config.eval_lr,
            chunk_size=config.eval_chunk, progress=progress,
        )  # fmt: skip
        curves = [Curve.from_samples("meta_learned", label, values, "ci95")]
        curves += [probe_curve(config, method, model, episodes) for method in probes(config)]
        headline = Headline(f"accuracy after {last} steps", "meta_learned", last)
        shape = {"n_way": config.n_way, "k_shot": config.k_shot, "k_query": config.test_k_query}
        details = {}
        classes_note = f"{config.dataset} {config.eval_subset} ({classes.n_classes} classes)"
    report = EvalReport(
        experiment=config.experiment,
        family="classification",
        metric="query accuracy",
        higher_is_better=True,
        error_bar="ci95",
        curves=curves,
        headline=headline,
        model=chosen,
        protocol={
            "episodes": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "classes": classes_note,
            **shape,
            "steps": config.eval_steps,
            "step_size": step_size_used(config, algorithm),
            "bn_policy": config.bn_policy,
        },
        seconds=time.time() - started,
        config=to_dict(config),
        display_scale=100.0,
        decimals=1,
        table_steps=sorted({0, min(1, last), last}),
        details=details,
    )
    write_report(report, run_dir)
    plots = run_dir / "plots"
    title = (
        f"Meta-Dataset episodes from {', '.join(config.training_sources)}"
        if config.episodes == "meta_dataset"
        else f"{config.dataset} {config.n_way}-way {config.k_shot}-shot"
    )
    adaptation_curves(curves, plots / "accuracy_vs_steps.png", "query accuracy", title)
    if details.get("by_ways"):
        rows = details["by_ways"]
        series = {name: [row["accuracy"][name] for row in rows] for name in rows[0]["accuracy"]}
        grouped_lines([f"{row['ways']}\n({row['episodes']})" for row in rows], series,
                      plots / "accuracy_vs_ways.png", "ways of the test episode (episodes)",
                      "query accuracy", title)  # fmt: skip
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(metrics, ["meta/accuracy", "val/accuracy"], plots / "learning_curve.png",
                       "accuracy")  # fmt: skip
    return report


class MetaDatasetScores(NamedTuple):
    """Per-episode results on Meta-Dataset test episodes, each by source.

    Attributes:
        values: query accuracy ``(eval_steps + 1, episodes)`` after each step.
        probed: each probe's accuracy ``(1, episodes)``, by probe then source.
        ways: ``(episodes,)`` each episode's number of classes.
    """

    values: dict[str, Tensor]
    probed: dict[str, dict[str, Tensor]]
    ways: dict[str, Tensor]


def meta_dataset_values(
    config: ClassificationConfig, algorithm: MetaAlgorithm, model: nn.Module, progress: bool
) -> MetaDatasetScores:
    """``eval_tasks`` Meta-Dataset episodes drawn from ``eval_seed`` over the evaluated
    sources' ``eval_subset`` classes, each adapted on its own (episodes differ in size), and
    the config's probes on the same episodes."""
    from metarl.loop import progress_bar

    sources = source_splits(config, config.eval_subset, config.evaluated_sources)
    spec, (channels, side) = episode_spec(config), image_shape(config)
    generator = torch.Generator().manual_seed(config.eval_seed)
    scored = problem(config)
    values: dict[str, list[Tensor]] = {name: [] for name in sources}
    ways: dict[str, list[Tensor]] = {name: [] for name in sources}
    probed = {method: {name: [] for name in sources} for method in probes(config)}
    for _ in progress_bar(range(config.eval_tasks), desc="test episodes", disable=not progress,
                          leave=False):  # fmt: skip
        episode = sample_meta_dataset_episode(sources, spec, generator, (channels, side, side))
        curve = adaptation_curve(algorithm, model, episode.batch, scored,
                                 config.eval_steps, config.eval_lr)  # fmt: skip
        values[episode.source].append(curve)
        ways[episode.source].append(torch.tensor([len(episode.description.shots)]))
        for method, scores in probed.items():
            scores[episode.source].append(PROBES[method].score(model, episode.batch, scored)[None])
    return MetaDatasetScores(
        _joined(values), {method: _joined(scores) for method, scores in probed.items()},
        {name: torch.cat(w) for name, w in ways.items() if w},
    )  # fmt: skip


def _joined(values: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    return {name: torch.cat(v, dim=1) for name, v in values.items() if v}


WAYS_EDGES = (5, 10, 20, 30, 40)
"""Lower ends of the groups of :func:`accuracy_by_ways` (the last group is open)."""


def accuracy_by_ways(scores: MetaDatasetScores, label: str, last: int) -> list[dict[str, Any]]:
    """Mean query accuracy of the episodes grouped by their number of ways (as Triantafillou
    et al. 2020, Fig. 3, plot it), over every source: after one step and after ``last`` steps
    for ``label``, and each probe's.

    Returns:
        One row per non-empty group: ``{"ways": "5-9", "episodes": n, "accuracy": {curve
        label: mean}}``.
    """
    ways = torch.cat(list(scores.ways.values()))
    every = torch.cat(list(scores.values.values()), dim=1)
    series = {f"{label}, 1 step": every[min(1, last)], f"{label}, {last} steps": every[last]}
    for method, by_source in scores.probed.items():
        series[PROBES[method].label] = torch.cat(list(by_source.values()), dim=1)[0]
    rows = []
    for lo, hi in zip(WAYS_EDGES, [*WAYS_EDGES[1:], None]):
        inside = (ways >= lo) & (ways < hi) if hi is not None else ways >= lo
        if inside.any():
            name = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
            accuracy = {k: float(v[inside].double().mean()) for k, v in series.items()}
            rows.append({"ways": name, "episodes": int(inside.sum()), "accuracy": accuracy})
    return rows


def per_source_curves(
    method: str, label: str, by_source: dict[str, Tensor], steps: list[int] | None = None
) -> list[Curve]:
    """One curve per source of ``by_source`` (``(S, episodes)`` each) and one over all
    episodes together (``setting="all"``)."""
    curves = [Curve.from_samples(method, label, v, "ci95", steps=steps, setting=name)
              for name, v in by_source.items()]  # fmt: skip
    every = torch.cat(list(by_source.values()), dim=1)
    return [*curves, Curve.from_samples(method, label, every, "ci95", steps=steps, setting="all")]


def _nil_accuracy(model: nn.Module, batch: TaskBatch, scored: Problem) -> Tensor:
    return accuracy_per_task(nil_probabilities(model, batch, scored), batch.query_y)


class Probe(NamedTuple):
    """A probe of the meta-learned features that adapts nothing."""

    label: str
    score: Callable[[nn.Module, TaskBatch, Problem], Tensor]
    """``(model, batch, problem) -> (n_tasks,)`` query accuracy."""
    config_key: str
    """The config's switch that asks for it."""


PROBES: dict[str, Probe] = {
    "nil": Probe("NIL (no head, cosine)", _nil_accuracy, "eval_nil"),
    "prototypes": Probe("prototype head, no step", prototype_scores, "eval_prototypes"),
}
"""The probes, by curve method."""


def probes(config: ClassificationConfig) -> list[str]:
    """The probes the config asks for."""
    return [method for method, probe in PROBES.items() if getattr(config, probe.config_key)]


def probe_curve(
    config: ClassificationConfig, method: str, model: nn.Module, episodes: TaskBatch
) -> Curve:
    """A probe's query accuracy on the test episodes (no adaptation: one value, at step 0)."""
    probe, scored = PROBES[method], problem(config)
    scores = [probe.score(model, episodes.tasks(i, i + config.eval_chunk), scored)
              for i in range(0, episodes.n_tasks, config.eval_chunk)]  # fmt: skip
    return Curve.from_samples(method, probe.label, torch.cat(scores)[None], "ci95", steps=[0])
