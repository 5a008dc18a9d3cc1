"""Speed benchmarks: each measures variants side by side in one process (ratios, not seconds).

:data:`SPEED` maps a benchmark name (``metarl bench --only NAME``) to a function of the suite
(``quick`` or ``paper``, which sets the size), a folder it may write to and the time limit's
deadline (a ``time.time()``, or None), returning a JSON-able result and a Markdown table. Only
the entries that train for hours (``time-to-*``, the remedies) stop at the deadline, resumably;
the others measure for minutes and finish what they started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

Result = tuple[dict[str, Any], str]
"""A speed benchmark's JSON-able result and its Markdown table."""
SpeedBenchmark = Callable[[str, Path, float | None], Result]
"""``(suite, workdir, deadline) -> Result``."""


class BenchmarkUnavailable(Exception):
    """A benchmark that cannot run on this machine (e.g. its dataset is not here)."""


def _speed_core(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.speed.core import bench_sinusoid, format_sinusoid

    result = bench_sinusoid(30 if suite == "quick" else 200)
    return result, format_sinusoid(result)


def _speed_omniglot(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.runner import missing_dataset
    from metarl.benchmarks.speed.omniglot import bench_omniglot, format_omniglot

    missing = missing_dataset("omniglot-5w1s")
    if missing is not None:
        raise BenchmarkUnavailable(missing)
    if suite == "quick":  # the mechanism, on the smaller setting
        result = bench_omniglot(2, settings=("5w1s",))
    else:
        result = bench_omniglot(20)
    return result, format_omniglot(result)


def _speed_simulator(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.speed.simulator import bench_locomotion, format_locomotion

    result = bench_locomotion(steps=10 if suite == "quick" else 50)
    return result, format_locomotion(result)


def _speed_meta_iteration(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.speed.meta_iteration import bench_meta_iteration, format_meta_iteration

    result = bench_meta_iteration(2 if suite == "quick" else 5)
    return result, format_meta_iteration(result)


def _speed_distributed(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.speed.distributed import bench_distributed, format_distributed

    result = bench_distributed(quick=suite == "quick")
    return result, format_distributed(result)


def _memory_family(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    from metarl.benchmarks.speed.family_memory import bench_family_memory, format_family_memory

    if suite == "quick":
        result = bench_family_memory(steps=(1, 2), iterations=2)
    else:
        result = bench_family_memory()
    return result, format_family_memory(result)


def _family(
    experiment: str, workdir: Path, paper: tuple, quick: tuple, **options: Any
) -> tuple[dict, str]:
    from metarl.benchmarks.speed.family_budget import (
        bench_family_budget,
        format_family_budget,
        plot_family_budget,
    )

    if quick:  # a fresh smoke run
        result = bench_family_budget(experiment, quick[0], workdir, *quick[1:], **options)
    else:
        result = bench_family_budget(experiment, paper[0], workdir, *paper[1:], resume=True,
                                     **options)  # fmt: skip
    figure = plot_family_budget(result, workdir / "score_vs_time.png")
    result["plots"] = [str(figure)]  # copied beside the report, linked under the table
    return result, format_family_budget(result)


def _family_sinusoid(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    quick = (2.0, {"eval_tasks": 20, "baseline_iterations": 50}, (1.0,))
    return _family("sinusoid", workdir, (120.0,), quick if suite == "quick" else ())


def _family_omniglot(experiment: str) -> SpeedBenchmark:
    """The family on an Omniglot experiment, 20 minutes of training per algorithm."""

    def run(suite: str, workdir: Path, deadline: float | None = None) -> Result:
        from metarl.benchmarks.runner import missing_dataset

        missing = missing_dataset(experiment)
        if missing is not None:
            raise BenchmarkUnavailable(missing)
        quick = (3.0, {"eval_tasks": 10}, (1.0,), ["MAML", "ProtoMAML"])
        return _family(experiment, workdir, (1200.0,), quick if suite == "quick" else ())

    return run


META_DATASET = {
    "episodes": "meta_dataset",
    "sources": ["omniglot", "mnist"],
    "eval_sources": ["omniglot", "mnist", "fashion-mnist"],
    "meta_batch_size": 1,
}
"""The family's Meta-Dataset comparison: episodes of variable ways and shots from Omniglot's
training alphabets and MNIST's digits 0-4; tested on Omniglot's test alphabets, MNIST's digits
5-9 and Fashion-MNIST's labels 5-9 (a dataset never seen in training)."""


def _family_meta_dataset(suite: str, workdir: Path, deadline: float | None = None) -> Result:
    """The family on Meta-Dataset episodes, 20 minutes of training per algorithm; 200 test
    episodes per point (a Meta-Dataset episode has up to 50 ways and 500 support images)."""
    from metarl.benchmarks.runner import missing_dataset

    for experiment in ("omniglot-5w1s", "mnist-5w1s", "fashion-mnist-5w1s"):
        if (missing := missing_dataset(experiment)) is not None:
            raise BenchmarkUnavailable(missing)
    quick = (3.0, {"eval_tasks": 6}, (1.0,), ["MAML", "ProtoMAML"])
    paper = (1200.0, {"eval_tasks": 200})
    return _family("omniglot-5w1s", workdir, paper, quick if suite == "quick" else (),
                   common=META_DATASET, title="Meta-Dataset episodes")  # fmt: skip


class TimeTo(NamedTuple):
    """A time-to-quality benchmark: train ``experiment`` with each row of ``ROWS[rows]``,
    evaluating every ``every`` iterations, until ``TARGETS[target or experiment]``."""

    experiment: str
    every: int
    rows: str = "options"
    target: str | None = None


TIME_TO: dict[str, TimeTo] = {
    "time-to-navigation": TimeTo("navigation", 5),
    "time-to-navigation-2-steps": TimeTo("navigation", 5, "two-step", "navigation-2-steps"),
    "time-to-halfcheetah-vel": TimeTo("halfcheetah-vel", 10),
    "halfcheetah-dir-remedies": TimeTo("halfcheetah-dir", 50, "remedies"),
    "ant-dir-remedies": TimeTo("ant-dir", 50, "ant-remedies"),
}
"""The benchmarks that train for hours to a paper number (their runs resume across calls)."""


def _time_to(spec: TimeTo) -> SpeedBenchmark:
    """Time from a fresh start to the paper's number on ``spec.experiment`` (``spec.target``:
    another entry of ``TARGETS`` than the experiment's own), evaluated every ``spec.every``
    iterations (the paper suite: up to the protocol's 500 iterations), with each row of
    ``ROWS[spec.rows]`` (``options``: the paper's and the fastest documented options;
    ``two-step``; ``remedies``; ``ant-remedies``)."""
    experiment, every, rows, target = spec

    def run(suite: str, workdir: Path, deadline: float | None = None) -> Result:
        from metarl.benchmarks.speed.time_to_quality import (
            ROWS,
            bench_time_to_quality,
            format_time_to_quality,
        )
        from metarl.run import default_baselines_dir

        baselines = default_baselines_dir(workdir, experiment)  # the suite's shared baselines
        if experiment != "navigation" and not (baselines / "oracle.pt").exists():
            raise BenchmarkUnavailable(
                f"needs the oracle baseline in {baselines}: `metarl bench --suite {suite} --only "
                f"{experiment}` trains it, or copy a checkout's committed ones there "
                f"(cp -r zoo/baselines/{experiment} {baselines.parent}/)"
            )
        evaluation = [f"baselines_dir={baselines}"]
        options = ROWS[rows]
        if suite == "quick":  # the mechanism on a tiny run
            result = bench_time_to_quality(
                experiment, workdir, 1, 1, ["meta_batch_size=2", "episodes_per_task=5"],
                [*evaluation, "eval_tasks=2", "eval_episodes_per_task=2",
                 "eval_trajectory_goals=0"], options, target=target,
            )  # fmt: skip
        else:
            result = bench_time_to_quality(experiment, workdir, every, 500, None, evaluation,
                                           options, resume=True, target=target,
                                           deadline=deadline)  # fmt: skip
        return result, format_time_to_quality(result)

    return run


def stored_time_to(name: str, workdir: Path) -> Result | None:
    """The table of ``TIME_TO[name]`` from the rows its paper-suite runs in ``workdir`` hold (None
    if it never ran there), without training."""
    from metarl.benchmarks.speed.time_to_quality import (
        ROWS,
        format_time_to_quality,
        read_time_to_quality,
    )

    spec = TIME_TO[name]
    result = read_time_to_quality(workdir, spec.every, ROWS[spec.rows])
    return None if result is None else (result, format_time_to_quality(result))


SPEED: dict[str, SpeedBenchmark] = {
    "speed-core": _speed_core,
    "speed-omniglot": _speed_omniglot,
    "speed-simulator": _speed_simulator,
    "speed-meta-iteration": _speed_meta_iteration,
    "speed-distributed": _speed_distributed,
    "memory-family": _memory_family,
    "family-sinusoid": _family_sinusoid,
    "family-omniglot": _family_omniglot("omniglot-5w1s"),
    "family-omniglot-20w1s": _family_omniglot("omniglot-20w1s"),
    "family-meta-dataset": _family_meta_dataset,
    **{name: _time_to(spec) for name, spec in TIME_TO.items()},
}
