"""``speed-distributed``: seconds per meta-iteration on one process and on two (``torchrun``),
for HalfCheetah-vel (MAML-TRPO, the paper's config) and Omniglot 5-way 1-shot (MAML), measured
by running ``metarl train`` as a user would, one variant after the other in one bench run.

Variants: one process with one torch thread, one process with two, and two processes with one
each (the batched MuJoCo simulator of each process steps on its share of the cores). On two
processes ``time/communication`` is the part of an iteration spent in the sums, waiting for the
slower process included. The first logged window is warm-up and not counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from metarl.benchmarks.common import ONE_PASS, machine_info
from metarl.benchmarks.runner import missing_dataset, run_child
from metarl.experiments import load_config
from metarl.run import read_metrics


class Variant(NamedTuple):
    label: str
    processes: int
    threads: int


VARIANTS = (
    Variant("1 process × 1 thread", 1, 1),
    Variant("1 process × 2 threads", 1, 2),
    Variant("2 processes × 1 thread", 2, 1),
)


def _time_run(
    experiment: str, variant: Variant, iterations: int, log_every: int
) -> dict[str, float]:
    """Train ``iterations`` iterations; seconds per iteration and in the sums, after warm-up."""
    # the whole meta-batch in one pass per process: the variants differ only in their threads
    # and processes (chunks on worker threads are speed-omniglot's)
    chunked = hasattr(load_config(experiment), "chunk_workers")
    one_pass = list(ONE_PASS) if chunked else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        child = run_child(
            ["train", experiment, "--out", str(out), "--no-progress", "--set",
             f"iterations={iterations}", f"log_every={log_every}", f"checkpoint_every={iterations}",
             "checkpoint_minutes=0", f"num_threads={variant.threads}", "tensorboard=false",
             *one_pass],
            processes=variant.processes,
        )  # fmt: skip
        if child.exit_code != 0:
            raise RuntimeError(f"metarl train {experiment} ({variant.label}) exited with "
                               f"{child.exit_code}")  # fmt: skip
        windows = read_metrics(out)[1:]
    if "time/sampling" in windows[0]:  # meta-RL logs each phase's seconds per iteration
        seconds = [w["time/sampling"] + w["time/update"] for w in windows]
    else:
        seconds = [1.0 / w["perf/iterations_per_second"] for w in windows]
    per_iteration = sum(seconds) / len(seconds)
    communication = sum(w.get("time/communication", 0.0) for w in windows) / len(windows)
    return {"seconds_per_iteration": per_iteration, "communication_seconds": communication}


def bench_distributed(quick: bool) -> dict[str, Any]:
    """Every variant on both experiments (Omniglot only where its data is)."""
    experiments = [("halfcheetah-vel", 3, 1) if quick else ("halfcheetah-vel", 6, 1)]
    unavailable = missing_dataset("omniglot-5w1s")
    if unavailable is None:
        experiments.append(("omniglot-5w1s", 40, 10) if quick else ("omniglot-5w1s", 200, 40))
    rows = []
    for experiment, iterations, log_every in experiments:
        for variant in VARIANTS:
            timed = _time_run(experiment, variant, iterations, log_every)
            rows.append({"experiment": experiment, "variant": variant.label, **timed})
    return {
        "benchmark": "distributed",
        "rows": rows,
        "omniglot_unavailable": unavailable,
        "machine": machine_info(),
    }


def format_distributed(result: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_distributed`'s result, speed-ups against one process with
    one thread."""
    machine = result["machine"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}",
        "",
        "| experiment | variant | s / iteration | speed-up | in the sums |",
        "|---|---|---|---|---|",
    ]
    reference: dict[str, float] = {}
    for row in result["rows"]:
        seconds = row["seconds_per_iteration"]
        reference.setdefault(row["experiment"], seconds)
        share = row["communication_seconds"] / seconds
        lines.append(
            f"| {row['experiment']} | {row['variant']} | {seconds:.3f} | "
            f"{reference[row['experiment']] / seconds:.2f}x | "
            f"{f'{100 * share:.0f}%' if row['communication_seconds'] else '—'} |"
        )
    if result.get("omniglot_unavailable"):
        lines += ["", f"Omniglot not measured: {result['omniglot_unavailable']}"]
    return "\n".join(lines)
