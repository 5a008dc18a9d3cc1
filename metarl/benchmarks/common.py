"""Shared benchmark helpers: peak memory of a variant in a fresh process, machine description."""

from __future__ import annotations

import importlib.metadata
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ONE_PASS = ("chunk_tasks=0", "chunk_workers=1")
"""Config overrides that compute a supervised meta-batch in one pass on the run's threads: for
benchmarks whose variants must differ only in what they set themselves (the Conv-4 configs
default to chunks on two worker threads)."""


def rss_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure_steps(step: Callable[[Any], Any], batches: list[Any]) -> tuple[float, list[float]]:
    """Run ``step(batch)`` for each batch: the peak resident-memory growth (MiB) from before the
    first step, and each step's seconds (Linux).

    Counted from before the first step, not after a warm-up step: the allocator keeps what a step
    frees for the next one, so after a warm-up the peak hardly rises above the resident set and a
    meta-iteration's activations and inner-loop graph would read as a few MiB (measured: 23 MiB
    for a whole-batch second-order Omniglot 5w1s iteration that needs 220). The gradients and
    optimiser state the first step creates (a few copies of the parameters) are included.
    """
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        step(batch)
        seconds.append(time.perf_counter() - started)
    return (rss_kib("VmHWM") - before) / 1024.0, seconds


def _peak_memory_worker(
    setup: Callable[[str, int], tuple[Callable[[Any], None], list[Any]]],
    variant: str,
    iterations: int,
    queue: Any,
) -> None:
    torch.set_num_threads(1)
    step, batches = setup(variant, iterations)
    queue.put(measure_steps(step, batches)[0])


def peak_memory_mib(
    setup: Callable[[str, int], tuple[Callable[[Any], None], list[Any]]],
    variant: str,
    iterations: int = 20,
) -> float:
    """Peak resident memory growth (MiB) of a fresh process running ``iterations`` steps (Linux).

    ``setup(variant, iterations)`` (a picklable module-level function) returns the step function
    and the batches to feed it.

    Measured as the peak RSS during the steps minus the RSS before the first
    (:func:`measure_steps`), so it counts what a meta-iteration allocates (activations, the
    inner-loop graph, gradients, optimiser state), not the interpreter, torch or the model.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_worker, args=(setup, variant, iterations, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return float(result)


def machine_info() -> dict[str, Any]:
    """CPU model, core count and library versions, for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for package in ("mujoco", "gymnasium"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info
