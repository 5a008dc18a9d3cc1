"""Speed benchmarks, each measured side by side in one process (``metarl bench NAME``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _sinusoid(iterations: int) -> tuple[dict[str, Any], str]:
    from metarl.benchmarks.sinusoid import bench_sinusoid, format_sinusoid

    result = bench_sinusoid(iterations)
    return result, format_sinusoid(result)


BENCHMARKS: dict[str, Callable[[int], tuple[dict[str, Any], str]]] = {"sinusoid": _sinusoid}
"""name -> function(iterations) returning (result as JSON-able dict, Markdown table)."""


def run_benchmark(name: str, iterations: int = 200, out: Path | None = None) -> int:
    """Entry point of ``metarl bench`` and ``scripts/benchmark.py``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    result, table = BENCHMARKS[name](iterations)
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return 0
