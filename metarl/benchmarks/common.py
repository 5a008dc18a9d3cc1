"""Shared benchmark helpers: peak memory of a variant in a fresh process, machine description."""

from __future__ import annotations

import importlib.metadata
import multiprocessing as mp
import os
import platform
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


def _peak_memory_worker(
    setup: Callable[[str, int], tuple[Callable[[Any], None], list[Any]]],
    variant: str,
    iterations: int,
    queue: Any,
) -> None:
    torch.set_num_threads(1)
    step, batches = setup(variant, iterations)
    step(batches[0])  # allocate the parameters' gradients and Adam state first
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for batch in batches:
        step(batch)
    queue.put((rss_kib("VmHWM") - before) / 1024.0)


def peak_memory_mib(
    setup: Callable[[str, int], tuple[Callable[[Any], None], list[Any]]],
    variant: str,
    iterations: int = 20,
) -> float:
    """Peak resident memory growth (MiB) of a fresh process running ``iterations`` steps (Linux).

    ``setup(variant, iterations)`` (a picklable module-level function) returns the step function
    and the batches to feed it.

    Measured as the peak RSS during the steps minus the RSS before them, so it counts what one
    meta-iteration allocates (activations, the inner-loop graph), not the interpreter or torch.
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
