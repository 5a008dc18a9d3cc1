"""``metarl bench``: the benchmark suite — quality against the paper, speed side by side.

Two suites share one list of benchmarks:

* ``quick`` — every pipeline at a tiny budget (minutes in total on a 2-core CPU): a smoke check
  for CI that asserts finite numbers and that adaptation improves on the pre-update value;
* ``paper`` — the full protocols (the experiments' YAML configs unchanged). They take hours, so
  the runs live in ``<runs_dir>/paper/<name>`` and every invocation resumes where the last one
  stopped (an interruption or ``--time-limit`` keeps the last checkpoint; the report then shows
  the run as in progress with the numbers of its latest checkpoint).

Each quality benchmark trains and evaluates in a child process (``metarl train`` / ``metarl
evaluate``, the same commands a user runs), so one failure does not end the suite and the peak
memory of each child is measured on its own (``os.wait4``). Speed benchmarks are the side-by-side
measurements of :mod:`metarl.benchmarks` plus the seconds per meta-iteration of the reference
HalfCheetah-vel config, split into sampling and update.

The report (:mod:`metarl.benchmarks.report`) is written from the results of the latest run of
each suite; every run's results are also kept, dated, in ``docs/benchmarks/history``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarl.config import ConfigError

SUITES = ("quick", "paper")
TINY_RL = {"eval_tasks": 10, "eval_episodes": 10, "checkpoint_every": 1}


@dataclass(frozen=True)
class Paper:
    """A reference number: ``value ± err`` of the ``metric`` the benchmark reports, or None."""

    value: float | None
    err: float | None
    source: str


@dataclass(frozen=True)
class QualityBenchmark:
    """One experiment trained and evaluated with the standard commands.

    Attributes:
        name: benchmark name (``--only``).
        experiment: the experiment (a YAML in ``metarl/configs``).
        quick: config overrides of the quick suite (the paper suite uses the config as it is).
        paper: the paper's number for the headline metric.
        baselines: meta-RL baselines trained (``metarl baseline``) before the paper evaluation.
    """

    name: str
    experiment: str
    quick: dict[str, Any]
    paper: Paper
    baselines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headline:
    """The number a benchmark is judged by, read from its ``eval.json``."""

    metric: str
    before: float  # the same metric before adaptation (step 0)
    value: float
    err: float
    higher_better: bool
    scale: float = 1.0  # displayed value = value * scale (accuracy in %)


def headline(report: dict[str, Any]) -> Headline:
    """The headline metric of an ``eval.json`` (sinusoid, classification or meta-RL)."""
    results = report["results"]
    if "accuracy" in report:  # few-shot classification: accuracy after the last test step
        curve = results["MAML"]
        return Headline(
            f"accuracy after {curve['steps'][-1]} steps",
            curve["mean"][0], curve["mean"][-1], curve["ci95"][-1], True, 100.0,
        )  # fmt: skip
    if "K=10" in results:  # sinusoid: MSE at K=10 after one step, as Meta-SGD's Table 1
        curve = results["K=10"]["MAML"]
        i = curve["steps"].index(1)
        return Headline("MSE, K=10, 1 step", curve["mean"][0], curve["mean"][i],
                        curve["ci95"][i], False)  # fmt: skip
    curve = results["MAML"]  # meta-RL: average return after one policy-gradient step
    i = curve["steps"].index(1)
    return Headline("return after 1 step", curve["mean"][0], curve["mean"][i],
                    curve["stderr"][i], True)  # fmt: skip


MEAN_ACTION_ORACLE = "oracle (PPO, mean action)"


def gap_closed(report: dict[str, Any]) -> float | None:
    """Meta-RL: the share of the gap between the random-init policy and the oracle that MAML
    closes after one step, ``(MAML − random) / (oracle − random)``; None without an oracle.

    The oracle is the PPO one scored on sampled actions like MAML (``oracle (PPO)``), else the
    analytic one; never the mean-action row, which pays no exploration noise."""
    results = report["results"]
    oracle = results.get("oracle (PPO)") or results.get("oracle")
    if oracle is None or "random init" not in results or "stderr" not in results["MAML"]:
        return None
    maml, random = results["MAML"], results["random init"]
    random_1 = random["mean"][random["steps"].index(1)]
    gap = oracle["mean"][0] - random_1
    if gap <= 0:
        return None
    return (maml["mean"][maml["steps"].index(1)] - random_1) / gap


_OMNIGLOT = "Finn et al. 2017, Table 1"
_FIG5 = "Finn et al. 2017, Fig. 5: a figure on rllab's models (dt 0.01, horizon 200), no number"
_QUICK_CLS = {
    "iterations": 20,
    "meta_batch_size": 4,
    "eval_episodes": 40,
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
    "eval_episodes": 20,
}
_RL_BASELINES = ("pretrained", "oracle")

QUALITY: tuple[QualityBenchmark, ...] = (
    QualityBenchmark(
        "sinusoid", "sinusoid",
        {"iterations": 2000, "baseline_iterations": 2000, "eval_tasks": 100},
        Paper(0.77, 0.11, "no table in the paper (Fig. 2-3); Li et al. 2017 (Meta-SGD), Table 1"),
    ),
    QualityBenchmark("omniglot-5w1s", "omniglot-5w1s", _QUICK_CLS, Paper(98.7, 0.4, _OMNIGLOT)),
    QualityBenchmark("omniglot-5w5s", "omniglot-5w5s", _QUICK_CLS, Paper(99.9, 0.1, _OMNIGLOT)),
    QualityBenchmark("omniglot-20w1s", "omniglot-20w1s", _QUICK_CLS, Paper(95.8, 0.3, _OMNIGLOT)),
    QualityBenchmark("omniglot-20w5s", "omniglot-20w5s", _QUICK_CLS, Paper(98.9, 0.2, _OMNIGLOT)),
    QualityBenchmark(
        "navigation", "navigation",
        {"iterations": 3, "meta_batch_size": 10, "episodes_per_task": 10, **TINY_RL},
        Paper(-11.68, 1.10, "Finn et al. 2017, Fig. 4 (as quoted in issue 3)"), _RL_BASELINES,
    ),
    QualityBenchmark("halfcheetah-vel", "halfcheetah-vel", _QUICK_LOCO, Paper(None, None, _FIG5),
                     _RL_BASELINES),
    QualityBenchmark("halfcheetah-dir", "halfcheetah-dir", _QUICK_LOCO, Paper(None, None, _FIG5),
                     _RL_BASELINES),
    QualityBenchmark("ant-vel", "ant-vel", _QUICK_LOCO, Paper(None, None, _FIG5), _RL_BASELINES),
    QualityBenchmark("ant-dir", "ant-dir", _QUICK_LOCO, Paper(None, None, _FIG5), _RL_BASELINES),
    QualityBenchmark("ant-goal", "ant-goal", _QUICK_LOCO, Paper(None, None, _FIG5), _RL_BASELINES),
)  # fmt: skip


def _speed_core(suite: str) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.sinusoid import bench_sinusoid, format_sinusoid

    result = bench_sinusoid(30 if suite == "quick" else 200)
    return result, format_sinusoid(result)


class BenchmarkUnavailable(Exception):
    """A benchmark that cannot run on this machine (e.g. its dataset is not here)."""


def _speed_omniglot(suite: str) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.omniglot import bench_omniglot, format_omniglot

    missing = _missing_dataset("omniglot-5w1s")
    if missing is not None:
        raise BenchmarkUnavailable(missing)

    result = bench_omniglot(2 if suite == "quick" else 20)
    return result, format_omniglot(result)


def _speed_simulator(suite: str) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.locomotion import bench_locomotion, format_locomotion

    result = bench_locomotion(steps=10 if suite == "quick" else 50)
    return result, format_locomotion(result)


def _speed_meta_iteration(suite: str) -> tuple[dict[str, Any], str]:
    """Seconds per meta-iteration of the reference HalfCheetah-vel config (40 tasks × 20
    episodes × 100 steps), split into sampling and update; the first iteration is warm-up."""
    iterations = 2 if suite == "quick" else 5
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code, peak, _ = _child(
            ["train", "halfcheetah-vel", "--out", str(out), "--no-progress",
             "--set", f"iterations={iterations}", f"checkpoint_every={iterations}"],
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"metarl train halfcheetah-vel exited with {code}")
        from metarl.run import read_metrics

        lines = read_metrics(out)[1:]
    sampling = sum(m["time/sampling"] for m in lines) / len(lines)
    update = sum(m["time/update"] for m in lines) / len(lines)
    steps = lines[0]["sampling/env_steps"] / lines[0]["iteration"]  # the log is cumulative
    result = {
        "experiment": "halfcheetah-vel (reference config)",
        "iterations_timed": len(lines),
        "sampling_seconds": sampling,
        "update_seconds": update,
        "seconds_per_iteration": sampling + update,
        "env_steps_per_iteration": steps,
        "peak_memory_mib": peak,
    }
    table = "\n".join(
        [
            "| config | sampling (s) | update (s) | s / meta-iteration | peak memory |",
            "|---|---|---|---|---|",
            f"| halfcheetah-vel, 40 tasks × 20 episodes × 100 steps | {sampling:.1f} | "
            f"{update:.1f} | **{sampling + update:.1f}** | {peak:.0f} MiB |",
        ]
    )
    return result, table


SPEED: dict[str, Callable[[str], tuple[dict[str, Any], str]]] = {
    "speed-core": _speed_core,
    "speed-omniglot": _speed_omniglot,
    "speed-simulator": _speed_simulator,
    "speed-meta-iteration": _speed_meta_iteration,
}
"""Speed benchmarks: name -> function(suite) returning (JSON-able result, Markdown table)."""


def benchmark_names() -> list[str]:
    """Every name ``--only`` accepts."""
    return [b.name for b in QUALITY] + list(SPEED)


# --- running ------------------------------------------------------------------------------------


STOPPED_CODES = (0, 130, -signal.SIGINT)  # how a child ends after SIGINT, cleanly
GRACE_SECONDS = 120.0  # after SIGINT, before SIGTERM and then SIGKILL


def _child(args: list[str], deadline: float | None = None) -> tuple[int, float, bool]:
    """Run ``python -m metarl ARGS``; return its exit code, peak resident memory (MiB) and
    whether the deadline stopped it.

    At ``deadline`` (a ``time.time()``) the child gets SIGINT: a trainer stops and keeps its last
    checkpoint, exactly as after Ctrl-C. One that does not stop within ``GRACE_SECONDS`` gets
    SIGTERM, then SIGKILL (the checkpoint is still safe: it is only ever replaced atomically).
    """
    proc = subprocess.Popen([sys.executable, "-m", "metarl", *args])
    interrupted_at = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.time()
            if deadline is not None and interrupted_at is None and now > deadline:
                proc.send_signal(signal.SIGINT)
                interrupted_at = now
            elif interrupted_at is not None and now > interrupted_at + GRACE_SECONDS:
                late = now > interrupted_at + 1.25 * GRACE_SECONDS
                proc.send_signal(signal.SIGKILL if late else signal.SIGTERM)
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C reached the child too: let it save, then stop the suite
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    stopped = interrupted_at is not None and proc.returncode in STOPPED_CODES
    return proc.returncode, usage.ru_maxrss / 1024.0, stopped  # ru_maxrss: KiB on Linux


@dataclass
class QualityResult:
    """What the report needs of one quality benchmark (JSON-able through ``vars``)."""

    name: str
    experiment: str
    status: str  # "done", "in progress", "failed", "not run", "skipped" (no dataset here)
    note: str = ""
    iterations: int = 0
    target_iterations: int = 0
    wall_seconds: float | None = None
    seconds_per_iteration: float | None = None
    peak_memory_mib: float | None = None
    headline: dict[str, Any] | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    comparison: str = ""
    table: str = ""
    plots: list[str] = field(default_factory=list)
    evaluated: str = ""  # when eval.json was written (the history lists each evaluation once)
    evaluated_iteration: int = 0  # the checkpoint eval.json measured (may precede `iterations`)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def evaluated_checkpoint(report: dict[str, Any]) -> int:
    """The run's iteration when ``eval.json`` was written (its tested model may be earlier: the
    best one of training)."""
    return int(report.get("model", {}).get("checkpoint_iteration", report["iteration"]))


def _stale(report: dict[str, Any] | None, state: dict[str, Any], baselines: Path) -> bool:
    """Whether ``eval.json`` must be rewritten: missing, of another checkpoint, of a model other
    than the one the run's protocol tests (``eval_model``: the best one it kept, or the last), or
    missing a baseline that has been trained since. ``state`` is the run's checkpoint.

    Any training since the evaluation makes it stale, even when the best model did not change:
    the re-evaluation also redraws the learning curve and picks up changes to the evaluation."""
    if report is None or evaluated_checkpoint(report) != state["iteration"]:
        return True
    wants = (
        "best"
        if state["config"].get("eval_model", "best") == "best" and state.get("best")
        else "last"
    )
    if report.get("model", {}).get("choice", "last") != wants:
        return True
    missing = [m.split(":")[0] for m in report.get("missing", [])]
    return any((baselines / f"{kind}.pt").exists() for kind in missing)


def _missing_dataset(experiment: str) -> str | None:
    """Why a few-shot benchmark cannot run here (its dataset is not on this machine), or None."""
    from metarl.experiments import load_config
    from metarl.supervised.data.files import DataError, dataset_dir

    config = load_config(experiment)
    if not hasattr(config, "dataset"):
        return None
    try:
        dataset_dir(config.data_dir, config.dataset)
    except DataError as e:
        return str(e)
    return None


def _run_quality(
    bench: QualityBenchmark, suite: str, run_dir: Path, deadline: float | None, progress: bool
) -> None:
    """Train missing baselines, train (or resume) MAML, evaluate if the evaluation is stale.

    Exit codes and peak memory of the children go to ``run_dir/bench.json``.
    """
    from metarl.rl.sb3_baselines import default_dir
    from metarl.run import CHECKPOINT, load_checkpoint

    quiet = [] if progress else ["--no-progress"]
    info_path = run_dir / "bench.json"
    info = _load(info_path) or {}
    baselines = default_dir(run_dir, bench.experiment)  # where `metarl evaluate` looks

    def save() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info))

    def running() -> bool:
        return deadline is None or time.time() < deadline

    missing = _missing_dataset(bench.experiment)
    if missing is not None and not (run_dir / CHECKPOINT).exists():
        info = {"skipped": missing}  # like a test without its data: said, not failed
        save()
        return
    info.pop("skipped", None)
    if suite == "paper":  # baselines first: they are short, and a time limit stops training
        for kind in bench.baselines:
            if running() and not (baselines / f"{kind}.pt").exists():
                print(f"\n=== {bench.name}: metarl baseline {kind}", flush=True)
                args = ["baseline", kind, bench.experiment, "--out", str(baselines), *quiet]
                info[f"baseline_{kind}_exit"] = _child(args)[0]
                save()
    if (run_dir / CHECKPOINT).exists():
        state = load_checkpoint(run_dir)
        done = state["iteration"] >= state["config"]["iterations"]
        args = None if done else ["train", bench.experiment, "--resume", str(run_dir), *quiet]
        if done:
            info["train_exit"] = 0  # whatever failed before, the training is complete now
    else:
        if run_dir.exists():  # a start that never reached its first checkpoint: start afresh
            for path in run_dir.iterdir():
                if path.name != "bench.json":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        args = ["train", bench.experiment, "--out", str(run_dir), *quiet]
        if suite == "quick":
            args += ["--set", *(f"{k}={v}" for k, v in bench.quick.items())]
    if args is not None and running():
        print(f"\n=== {bench.name}: metarl {' '.join(args)}", flush=True)
        code, peak, stopped = _child(args, deadline)
        info["train_peak_mib"] = max(peak, info.get("train_peak_mib", 0.0))
        info["train_exit"] = 0 if stopped else code  # stopped at the time limit: not a failure
        save()
    if not (run_dir / CHECKPOINT).exists():
        return
    state = load_checkpoint(run_dir)
    if _stale(_load(run_dir / "eval.json"), state, baselines):
        print(f"\n=== {bench.name}: metarl evaluate {run_dir}", flush=True)
        code, peak, _ = _child(["evaluate", str(run_dir), *quiet])
        info["eval_peak_mib"], info["eval_exit"] = peak, code
    else:
        info["eval_exit"] = 0  # the stored evaluation is current
    save()


def _compare(head: Headline, paper: Paper) -> str:
    """ "met", "missed by X" or why there is no comparison."""
    if paper.value is None:
        return "no number in the paper"
    value = head.value * head.scale
    slack = (paper.err or 0.0) + head.err * head.scale  # within both error bars counts as met
    gap = (paper.value - value) if head.higher_better else (value - paper.value)
    return "met" if gap <= slack else f"missed by {gap:.3g}"


def collect_quality(bench: QualityBenchmark, run_dir: Path, suite: str) -> QualityResult:
    """The result of one quality benchmark from its run directory (whatever state it is in);
    anything unreadable makes it a failed row, never the end of the suite."""
    result = QualityResult(bench.name, bench.experiment, "not run", paper=vars(bench.paper))
    try:
        _collect(bench, run_dir, suite, result)
    except Exception as e:  # noqa: BLE001 - one broken run must not hide the others
        result.status, result.note = "failed", f"cannot read the run: {type(e).__name__}: {e}"
    return result


def _collect(bench: QualityBenchmark, run_dir: Path, suite: str, result: QualityResult) -> None:
    from metarl.experiments import get_experiment
    from metarl.run import CHECKPOINT, load_checkpoint

    info = _load(run_dir / "bench.json") or {}
    failed = [f"metarl {k[:-5].replace('_', ' ')} exited with code {v}"
              for k, v in info.items() if k.endswith("_exit") and v != 0]  # fmt: skip
    if not (run_dir / CHECKPOINT).exists():
        result.note = "; ".join(failed) or info.get("skipped") or "not run yet"
        result.status = "failed" if failed else "skipped" if "skipped" in info else "not run"
        return
    state = load_checkpoint(run_dir)
    result.iterations, result.target_iterations = state["iteration"], state["config"]["iterations"]
    result.wall_seconds = state.get("elapsed")
    if result.wall_seconds and result.iterations:
        result.seconds_per_iteration = result.wall_seconds / result.iterations
    peaks = [info.get(k) for k in ("train_peak_mib", "eval_peak_mib") if info.get(k)]
    result.peak_memory_mib = max(peaks) if peaks else None
    report = _load(run_dir / "eval.json")
    if failed or report is None:
        result.status = "failed"
        result.note = "; ".join(failed) or "no eval.json: the evaluation did not finish"
        return
    head = headline(report)
    result.headline = vars(head)
    result.table = get_experiment(bench.experiment).results_table(report)
    # A quick-suite number is a smoke check at a tiny budget, not a result to hold to the paper.
    result.comparison = _compare(head, bench.paper) if suite == "paper" else "quick budget"
    closed = gap_closed(report)
    if closed is not None and suite == "paper":
        # Reports written before the oracle was scored on sampled actions held its mean action.
        old = "oracle (PPO)" in report["results"] and MEAN_ACTION_ORACLE not in report["results"]
        oracle = "oracle (mean action)" if old else "oracle"
        result.comparison += f"; closes {closed:.0%} of the random-init → {oracle} gap"
    done = result.iterations >= result.target_iterations
    result.status = "done" if done else "in progress"
    result.evaluated_iteration = evaluated_checkpoint(report)
    notes = []
    if report.get("model", {}).get("choice") == "best":  # the paper's choice (eval_model)
        notes.append(f"the best model of training, from iteration {report['iteration']}")
    if evaluated_checkpoint(report) != result.iterations:
        notes.append(f"evaluated at iteration {evaluated_checkpoint(report)}")
    result.note = "; ".join(notes)
    stamp = (run_dir / "eval.json").stat().st_mtime
    result.evaluated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    result.plots = sorted(str(p) for p in (run_dir / "plots").glob("*.png"))


def problems(
    results: list[QualityResult], speed: dict[str, Any], complete: bool = False
) -> list[str]:
    """What makes a suite run fail: errors, non-finite numbers, adaptation that clearly hurts;
    with ``complete`` (the quick suite) also a benchmark that did not run to the end."""
    found = []
    for r in results:
        if r.status == "failed" or (complete and r.status not in ("done", "skipped")):
            found.append(f"{r.name}: {r.status}" + (f" ({r.note})" if r.note else ""))
        if r.headline is None:
            continue
        h = r.headline
        if not all(math.isfinite(h[k]) for k in ("before", "value", "err")):
            found.append(f"{r.name}: non-finite result {h}")
        # Worse than before by more than two standard errors: a tiny smoke budget (2 Ant
        # iterations) adapts at noise level, so "not better" alone would fail by chance.
        elif (h["before"] - h["value"]) * (1 if h["higher_better"] else -1) > 2.0 * h["err"]:
            found.append(
                f"{r.name}: adaptation makes it worse than the pre-update value beyond two "
                f"standard errors ({h['metric']}: {h['before']:.4g} before, "
                f"{h['value']:.4g} ± {h['err']:.2g} after)"
            )
    for name, entry in speed.items():
        if "error" in entry or (complete and "skipped" in entry and "unavailable" not in entry):
            found.append(f"{name}: {entry.get('error') or entry.get('skipped')}")
    return found


def run_suite(
    suite: str = "quick",
    only: list[str] | None = None,
    runs_dir: Path = Path("runs/bench"),
    report_dir: Path = Path("."),
    time_limit_minutes: float | None = None,
    report_only: bool = False,
    progress: bool = True,
) -> int:
    """Entry point of ``metarl bench``: run the suite, write the report, return the exit code."""
    from metarl.benchmarks.common import machine_info
    from metarl.benchmarks.report import latest_runs, write_report

    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; available: {', '.join(SUITES)}")
    unknown = sorted(set(only or []) - set(benchmark_names()))
    if unknown:
        raise ConfigError(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(benchmark_names())}"
        )
    selected = set(only) if only else set(benchmark_names())
    started = time.time()
    deadline = None if time_limit_minutes is None else started + 60.0 * time_limit_minutes
    root = runs_dir / suite
    interrupted = False
    results = []
    for bench in QUALITY:
        if bench.name not in selected:
            continue
        ran = False
        # Past the deadline the paper suite still evaluates what is there (`--time-limit 0`);
        # the quick suite stops.
        within = deadline is None or time.time() < deadline or suite == "paper"
        if not (report_only or interrupted) and within:
            if suite == "quick" and (root / bench.name).exists():
                shutil.rmtree(root / bench.name)  # a quick run is a fresh smoke check
            ran = True
            try:
                _run_quality(bench, suite, root / bench.name, deadline, progress)
            except KeyboardInterrupt:  # report what exists; the next call resumes
                print(f"\ninterrupted during {bench.name}", file=sys.stderr)
                interrupted = True
        if suite == "quick" and not report_only and not ran:  # never an earlier run's numbers
            note = "interrupted" if interrupted else "time limit reached"
            results.append(QualityResult(bench.name, bench.experiment, "not run", note=note,
                                         paper=vars(bench.paper)))  # fmt: skip
        else:
            results.append(collect_quality(bench, root / bench.name, suite))
    # Benchmarks not run this time (--only, --report-only) keep their latest results.
    previous = latest_runs(report_dir).get(suite, {})
    speed: dict[str, Any] = dict(previous.get("speed", {}))
    attempted: dict[str, Any] = {}
    for name, fn in SPEED.items():
        if name not in selected or report_only or interrupted:
            continue
        if deadline is not None and time.time() > deadline:
            attempted[name] = {"skipped": "time limit reached"}
            speed.setdefault(name, attempted[name])  # an earlier measurement stays
            continue
        print(f"\n=== {name}", flush=True)
        try:
            result, table = fn(suite)
            attempted[name] = {"result": result, "table": table}
            print(table)
        except KeyboardInterrupt:
            interrupted = True
            continue
        except BenchmarkUnavailable as e:
            attempted[name] = {"skipped": str(e), "unavailable": True}
        except Exception as e:  # noqa: BLE001 - a failed benchmark is reported, not fatal
            attempted[name] = {"error": f"{type(e).__name__}: {e}"}
        speed[name] = attempted[name]
    kept = {r["name"]: r for r in previous.get("quality", [])}
    kept.update({r.name: vars(r) for r in results})
    for bench in QUALITY:  # never reported before: a paper run's directory may hold results
        if bench.name not in kept:
            missing = QualityResult(bench.name, bench.experiment, "not run", note="not run yet",
                                    paper=vars(bench.paper))  # fmt: skip
            kept[bench.name] = vars(
                collect_quality(bench, root / bench.name, suite) if suite == "paper" else missing
            )
    run = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": time.time() - started,
        "report_only": report_only,
        "only": sorted(only) if only else None,
        "machine": machine_info(),
        "quality": [kept[b.name] for b in QUALITY if b.name in kept],
        "speed": speed,
    }
    # The quick suite is a smoke check of everything selected: all of it must have run.
    found = problems(results, attempted, complete=suite == "quick" and not report_only)
    run["problems"] = found
    paths = write_report(run, report_dir, record=not report_only)
    print("\n" + "\n".join(f"wrote {p}" for p in paths))
    for p in found:
        print(f"PROBLEM: {p}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if found else 0
