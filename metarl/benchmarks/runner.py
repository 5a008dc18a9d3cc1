"""Running a quality benchmark: child processes of the standard commands, resumable.

Each step is the command a user would run (``metarl baseline``, ``metarl train``, ``metarl
evaluate``) in a child process, so one failure does not end the suite and the peak memory of
each child is measured on its own (``os.wait4``). Exit codes and peak memory go to
``<run_dir>/bench.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from metarl.benchmarks.registry import QualityBenchmark
from metarl.benchmarks.staleness import needs_evaluation
from metarl.experiments import load_config

STOPPED_CODES = (0, 130, -signal.SIGINT)  # how a child ends after SIGINT, cleanly
GRACE_SECONDS = 120.0  # after SIGINT, before SIGTERM and then SIGKILL
# A trainer told the time limit stops itself where its log window ends, with a checkpoint there
# (nothing trained since the last checkpoint is lost); SIGINT only if it has not
# stopped this long after the limit (a 20-way Omniglot window of 100 iterations: ~4 min here).
WINDOW_SECONDS = 900.0
BENCH_INFO = "bench.json"


def time_limit_args(deadline: float | None, now: float) -> tuple[list[str], float | None]:
    """A training child's ``--time-limit`` for the time left from ``now`` until ``deadline``
    (both ``time.time()`` values; none without a deadline), and when to interrupt it if it has
    not stopped by itself (``WINDOW_SECONDS`` later)."""
    if deadline is None:
        return [], None
    minutes = max(deadline - now, 0.0) / 60.0
    return ["--time-limit", f"{minutes:.3f}"], deadline + WINDOW_SECONDS


class ChildResult(NamedTuple):
    """How a child ``metarl`` process ended: exit code, peak resident memory (MiB), and whether
    the deadline stopped it."""

    exit_code: int
    peak_mib: float
    stopped: bool


def run_child(args: list[str], deadline: float | None = None, processes: int = 1) -> ChildResult:
    """Run ``python -m metarl ARGS`` (``processes`` > 1: under ``torchrun`` on this machine) and
    wait for it.

    At ``deadline`` (a ``time.time()``) the child gets SIGINT: a trainer stops and keeps its last
    checkpoint, exactly as after Ctrl-C. One that does not stop within ``GRACE_SECONDS`` gets
    SIGTERM, then SIGKILL (the checkpoint is still safe: it is only ever replaced atomically).
    """
    launcher = [sys.executable, "-m"]
    if processes > 1:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
    proc = subprocess.Popen([*launcher, "metarl", *args])
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
    code = os.waitstatus_to_exitcode(status)
    stopped = interrupted_at is not None and code in STOPPED_CODES
    return ChildResult(code, usage.ru_maxrss / 1024.0, stopped)  # ru_maxrss: KiB on Linux


def missing_dataset(experiment: str) -> str | None:
    """Why a few-shot benchmark cannot run here (its dataset is not on this machine), or None."""
    from metarl.supervised.data.files import DataError, dataset_dir
    from metarl.supervised.data.mnist import FALLBACK_DIRS

    config = load_config(experiment)
    if not hasattr(config, "dataset"):
        return None
    try:  # where the loader looks: the data root, then the system's copy (Debian's package)
        dataset_dir(config.data_dir, config.dataset, FALLBACK_DIRS.get(config.dataset, ()))
    except DataError as e:
        return str(e)
    return None


def read_info(run_dir: Path) -> dict[str, Any]:
    """The run's ``bench.json`` (exit codes, peak memory), or an empty dict."""
    path = run_dir / BENCH_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def run_quality(
    bench: QualityBenchmark, suite: str, run_dir: Path, deadline: float | None, progress: bool
) -> None:
    """Train missing baselines, train (or resume) the experiment, evaluate if the evaluation is
    stale (:func:`~metarl.benchmarks.staleness.needs_evaluation`)."""
    from metarl.run import CHECKPOINT, default_baselines_dir, load_checkpoint

    quiet = [] if progress else ["--no-progress"]
    info = read_info(run_dir)
    baselines = default_baselines_dir(run_dir, bench.experiment)  # where `metarl evaluate` looks

    def save() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / BENCH_INFO).write_text(json.dumps(info))

    def running() -> bool:
        return deadline is None or time.time() < deadline

    missing = missing_dataset(bench.experiment)
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
                info[f"baseline_{kind}_exit"] = run_child(args).exit_code
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
                if path.name != BENCH_INFO:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        args = ["train", bench.experiment, "--out", str(run_dir), *quiet]
        if overrides := bench.overrides(suite):
            args += ["--set", *(f"{k}={v}" for k, v in overrides.items())]
    if args is not None and running():
        limit, interrupt_at = time_limit_args(deadline, time.time())
        args += limit
        print(f"\n=== {bench.name}: metarl {' '.join(args)}", flush=True)
        child = run_child(args, interrupt_at)
        info["train_peak_mib"] = max(child.peak_mib, info.get("train_peak_mib", 0.0))
        info["train_exit"] = 0 if child.stopped else child.exit_code  # a time limit: no failure
        save()
    if not (run_dir / CHECKPOINT).exists():
        return
    if needs_evaluation(run_dir, load_checkpoint(run_dir), baselines):
        print(f"\n=== {bench.name}: metarl evaluate {run_dir}", flush=True)
        child = run_child(["evaluate", str(run_dir), *quiet])
        info["eval_peak_mib"], info["eval_exit"] = child.peak_mib, child.exit_code
    else:
        info["eval_exit"] = 0  # the stored evaluation is current
    save()
