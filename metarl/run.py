"""Run directories: resolved config, metrics log, atomic checkpoints.

Layout::

    runs/<experiment>-<time>/
      config.yaml      the resolved config
      metrics.jsonl    one JSON line per logging step
      events.*         TensorBoard event files
      checkpoint.pt    latest state, written atomically (temp file, then rename)
      eval.json        written by ``metarl evaluate``
      plots/
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"


class RunError(RuntimeError):
    """A run directory is missing, incomplete, or of another experiment."""


def adam(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for the device (the same update; on the CPU
    one kernel instead of ~10 small ops per tensor, which matters for MAML's small models)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=lr)


def iteration_bar(config: Any, start: int, progress: bool = True) -> Any:
    """The progress bar over iterations ``start..config.iterations`` (tqdm; loss and it/s)."""
    from tqdm import tqdm

    return tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        desc=config.experiment,
        disable=not progress,
        unit="it",
        dynamic_ncols=True,
    )


def new_run_dir(experiment: str, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """Create the directory of a new run (``root/<experiment>-<time>`` unless ``out`` is given).

    Raises:
        RunError: ``out`` already holds a run (its checkpoint would be overwritten).
    """
    path = (
        Path(out)
        if out is not None
        else Path(root) / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (path / CHECKPOINT).exists() or (path / METRICS).exists():
        raise RunError(f"{path} already holds a run; pass --resume {path} to continue it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(run_dir: str | Path, experiment: str | None = None) -> dict[str, Any]:
    """The checkpoint of ``run_dir``; with ``experiment``, refuse a run of another experiment.

    Raises:
        RunError: no such directory, no checkpoint, an unreadable one, or another experiment.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no {CHECKPOINT} in {run_dir}: the run never reached its first checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem means the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"cannot read {path}: {reason}") from None
    if not isinstance(state, dict) or "config" not in state:
        raise RunError(f"{path} is not a metarl checkpoint")
    found = state["config"].get("experiment")
    if experiment is not None and found != experiment:
        raise RunError(f"{run_dir} is a run of {found!r}, not {experiment!r}")
    return state


class MetricsLog:
    """Appends one JSON line per logging step to ``metrics.jsonl`` (and TensorBoard if asked).

    On resume, lines past the checkpoint's iteration (written after the last checkpoint by a run
    that then died) are dropped, so the log matches the state it continues from.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, resume_iteration: int | None = None):
        self.path = run_dir / METRICS
        if resume_iteration is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= resume_iteration
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

            self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume_iteration)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        """Log ``values`` (namespaced keys such as ``meta/loss``) at ``iteration``."""
        record = {"iteration": iteration, "time": time.time()}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All lines of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
