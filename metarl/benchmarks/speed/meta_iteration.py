"""``speed-meta-iteration``: seconds per meta-iteration of the reference HalfCheetah-vel config
(40 tasks × 20 episodes × 100 steps), split into sampling and update, measured by running
``metarl train`` as a user would; the first iteration is warm-up and not counted."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from metarl.benchmarks.runner import run_child
from metarl.run import read_metrics


def bench_meta_iteration(iterations: int = 5) -> dict[str, Any]:
    """Train the reference config for ``iterations`` iterations and time them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        child = run_child(
            ["train", "halfcheetah-vel", "--out", str(out), "--no-progress",
             "--set", f"iterations={iterations}", f"checkpoint_every={iterations}",
             "checkpoint_minutes=0"],
        )  # fmt: skip
        if child.exit_code != 0:
            raise RuntimeError(f"metarl train halfcheetah-vel exited with {child.exit_code}")
        lines = read_metrics(out)[1:]
    sampling = sum(m["time/sampling"] for m in lines) / len(lines)
    update = sum(m["time/update"] for m in lines) / len(lines)
    steps = lines[0]["sampling/env_steps"] / lines[0]["iteration"]  # the log is cumulative
    return {
        "experiment": "halfcheetah-vel (reference config)",
        "iterations_timed": len(lines),
        "sampling_seconds": sampling,
        "update_seconds": update,
        "seconds_per_iteration": sampling + update,
        "env_steps_per_iteration": steps,
        "peak_memory_mib": child.peak_mib,
    }


def format_meta_iteration(result: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    sampling, update = result["sampling_seconds"], result["update_seconds"]
    return "\n".join(
        [
            "| config | sampling (s) | update (s) | s / meta-iteration | peak memory |",
            "|---|---|---|---|---|",
            f"| halfcheetah-vel, 40 tasks × 20 episodes × 100 steps | {sampling:.1f} | "
            f"{update:.1f} | **{sampling + update:.1f}** | {result['peak_memory_mib']:.0f} MiB |",
        ]
    )
