"""Speed benchmarks, each measured side by side in one process (``metarl bench NAME``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarl.config import ConfigError


def _sinusoid(iterations: int) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.sinusoid import bench_sinusoid, format_sinusoid

    result = bench_sinusoid(iterations)
    return result, format_sinusoid(result)


def _omniglot(iterations: int) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.omniglot import bench_omniglot, format_omniglot

    # An Omniglot meta-iteration costs about 100 sinusoid ones: time a tenth as many.
    result = bench_omniglot(max(iterations // 10, 2))
    return result, format_omniglot(result)


def _locomotion(iterations: int) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.locomotion import bench_locomotion, format_locomotion

    # `iterations` = policy steps per round; 200 environments as a meta-batch slice.
    result = bench_locomotion(steps=max(10, iterations // 4))
    return result, format_locomotion(result)


BENCHMARKS: dict[str, Callable[[int], tuple[dict[str, Any], str]]] = {
    "sinusoid": _sinusoid,
    "omniglot": _omniglot,
    "locomotion": _locomotion,
}
"""name -> function(iterations) returning (result as JSON-able dict, Markdown table)."""


def run_benchmark(name: str, iterations: int = 200, out: Path | None = None) -> int:
    """Entry point of ``metarl bench`` and ``scripts/benchmark.py``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    result, table = BENCHMARKS[name](iterations)
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return 0
