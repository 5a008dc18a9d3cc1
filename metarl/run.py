"""Run directories: resolved config, metrics log, atomic checkpoints, one owner at a time.

Layout::

    runs/<experiment>-<time>/
      config.yaml      the resolved config
      metrics.jsonl    one JSON line per logging step
      events.*         TensorBoard event files
      checkpoint.pt    latest state, written atomically (temp file, then rename)
      eval.json        written by ``metarl evaluate``
      plots/
      .lock            the process that owns the run while it trains or is evaluated

Files on disk are data: checkpoints hold only tensors and plain types and are read with
``torch.load(weights_only=True)``, so a crafted file cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOCK = ".lock"
ZOO_MARKER = ".metarl-zoo"
"""The file that marks a model zoo's top folder (see :func:`zoo_root`)."""


class RunError(RuntimeError):
    """A run directory or a stored file is missing, unreadable, in use, or of another experiment."""


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    """``root/<experiment>-<time>``, the directory of a new run unless ``--out`` names one."""
    return Path(root) / f"{experiment}-{_timestamp()}"


def prepare_new_run_dir(path: Path) -> Path:
    """Make ``path`` ready for a new run (call it holding :func:`run_lock`).

    A directory whose run never reached its first checkpoint (killed early, or its start
    failed) is started again, with a notice; its old log is removed.

    Raises:
        RunError: ``path`` holds a run with a checkpoint (it would be overwritten).
    """
    if (path / CHECKPOINT).exists():
        raise RunError(
            f"{path} already holds a run: continue it with --resume {path} (Python: "
            f"resume={str(path)!r}), or give another directory"
        )
    if (path / METRICS).exists():
        print(f"metarl: {path} holds a run that never reached its first checkpoint; starting it "
              "again", file=sys.stderr)  # fmt: skip
        (path / METRICS).unlink()
        for events in path.glob("events.out.tfevents.*"):
            events.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_unstarted(run_dir: Path) -> None:
    """Remove a run directory whose start failed before it logged anything (it holds only
    ``config.yaml`` and the lock), so that a bad dataset or a refused start leaves no empty run
    behind. Anything more (a metrics line, a checkpoint) is kept: it tells what went wrong."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {CONFIG, LOCK}:
        for name in (CONFIG, LOCK):
            (run_dir / name).unlink(missing_ok=True)
        run_dir.rmdir()


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def run_lock(run_dir: Path, what: str) -> Iterator[None]:
    """Own ``run_dir`` while the block runs: a second process gets one line naming the holder.

    The lock is an ``flock`` on ``run_dir/.lock``, which holds the owner's PID and command; the
    kernel releases it when the owner dies, however it dies, so a stale lock never blocks.

    Raises:
        RunError: another process owns the run, or the directory cannot be written.
    """
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        unwritable = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        way_out = (
            ": copy the run to a writable place first"
            if unwritable and (run_dir / CHECKPOINT).is_file()
            else ""
        )
        raise RunError(f"cannot write to {run_dir} ({e.strerror}){way_out}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunError(f"{run_dir} is in use by {_holder(fd)}; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} ({what})\n".encode())
        yield
    finally:
        os.close(fd)  # releases the flock


def lock_holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir``'s lock (its PID and command), or None if nobody does."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)  # releases a shared lock taken just to look


def _holder(fd: int) -> str:
    """The holder a lock file names (the line `run_lock` writes: PID and command)."""
    return os.read(fd, 200).decode(errors="replace").strip() or "another process"


def zoo_root(run_dir: Path) -> Path | None:
    """The committed model zoo that ``run_dir`` lies in (the nearest folder above it marked by
    :data:`ZOO_MARKER`), or None. A zoo's files are reference results: commands work on copies."""
    return next(
        (folder for folder in run_dir.resolve().parents if (folder / ZOO_MARKER).is_file()), None
    )


def default_baselines_dir(run_dir: Path, experiment: str) -> Path:
    """Where a meta-RL run's baselines are looked for when its config names none:
    ``<runs>/baselines/<experiment>`` beside the run, or for an entry of a committed zoo (at
    any depth) the zoo's own ``<zoo>/baselines/<experiment>``."""
    zoo = zoo_root(run_dir)
    return (run_dir.parent if zoo is None else zoo) / "baselines" / experiment


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written.

    Raises:
        RunError: the file could not be written (the previous one is left as it was).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        free = _free_mib(path.parent)
        hint = f"; {free:.0f} MiB free on its disk" if free is not None else ""
        raise RunError(f"cannot write {path}: {_first_line(e)}{hint}; the previous file is "
                       "intact") from None  # fmt: skip
    finally:
        if tmp.exists():
            tmp.unlink()


def _free_mib(folder: Path) -> float | None:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize / 2**20


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_tensors(path: Path, what: str = "file") -> Any:
    """A file of tensors and plain types (``torch.load(weights_only=True)``).

    Raises:
        RunError: missing, or not such a file (a pickle that would run code is refused, unrun).
    """
    if not path.is_file():
        raise RunError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on a plain pickle's protocol: ours below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem means the same to the user
        raise RunError(f"cannot read {path} as a {what} of tensors: {_unreadable(e)}") from None


def _unreadable(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words: torch's own message
    suggests lifting the weights-only restriction, which would run whatever code the file holds."""
    text = str(error)
    name = re.search(r"GLOBAL (\S+)", text)  # torch names a refused class or function so
    if name or "Unsupported global" in text:
        found = f" ({name.group(1)})" if name else ""
        return (f"it holds Python objects{found} besides tensors, and metarl does not unpickle "
                "objects: loading them could run code from the file")  # fmt: skip
    # A text file fails on its first byte as a pickle opcode (a KeyError of that byte's code).
    if "Weights only load failed" in text or isinstance(error, EOFError | KeyError):
        return "not a PyTorch file of tensors (empty, another format, or a plain pickle)"
    cut_off = isinstance(error, OSError) and error.errno == errno.EINVAL  # torch's read past end
    if "zip archive" in text or "central directory" in text or cut_off:
        return "a truncated or corrupt PyTorch file"
    return _first_line(error)


def load_weights(module: torch.nn.Module, weights: Any, source: str | Path) -> None:
    """``module.load_state_dict(weights)``, or one line naming ``source`` (a stored file whose
    weights do not fit the network its config builds: edited, or of another version).

    Raises:
        RunError: missing, unexpected or misshapen weights.
    """
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        details = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        why = details[0] if details else _first_line(e)
        raise RunError(
            f"{source}: its weights do not fit the {type(module).__name__} its config builds "
            f"({why[:200]})"
        ) from None


CHECKPOINT_KEYS = {"config": dict, "iteration": int, "model": dict}
"""What every checkpoint holds, whatever its family (plus the family's own state)."""


def load_checkpoint(run_dir: str | Path, experiment: str | None = None) -> dict[str, Any]:
    """The checkpoint of ``run_dir``; with ``experiment``, refuse a run of another experiment.

    Raises:
        RunError: no such directory, no checkpoint, an unreadable or malformed one, or another
            experiment.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        holder = lock_holder(run_dir)
        if holder is not None:
            raise RunError(f"{run_dir} is in use by {holder} and has no {CHECKPOINT} yet")
        if not (run_dir / CONFIG).is_file():
            raise RunError(f"{run_dir} is not a run directory (no {CHECKPOINT} or {CONFIG})")
        raise RunError(f"no {CHECKPOINT} in {run_dir}: the run never reached its first checkpoint")
    state = load_tensors(path, "checkpoint")
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a metarl checkpoint")
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise RunError(f"{path} is not a metarl checkpoint (no {kind.__name__} {key!r})")
    found = state["config"].get("experiment")
    if not isinstance(found, str):
        raise RunError(f"{path} is not a metarl checkpoint (its config names no experiment)")
    if state["iteration"] < 0:
        raise RunError(f"{path} is not a metarl checkpoint (iteration {state['iteration']})")
    best = state.get("best")
    if best is not None and not (
        isinstance(best, dict)
        and isinstance(best.get("iteration"), int)
        and isinstance(best.get("model"), dict)
    ):
        raise RunError(f"{path} is not a metarl checkpoint (its best model is malformed)")
    if experiment is not None and found != experiment:
        raise RunError(f"{run_dir} is a run of {found!r}, not {experiment!r}")
    return state


def _parse_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON lines of ``path``, and how many unreadable lines were skipped (a torn write)."""
    records, torn = [], 0
    # A byte that is not UTF-8 becomes U+FFFD: its line still parses, or is dropped as torn.
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            records.append(record)
        else:
            torn += 1
    return records, torn


class MetricsLog:
    """Appends one JSON line per logging step to ``metrics.jsonl`` (and TensorBoard if asked).

    On resume, lines past the checkpoint's iteration (written after the last checkpoint by a run
    that then died) are dropped, and so is a line a crash or a full disk left half-written, with
    a notice; the log then matches the state it continues from.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, resume_iteration: int | None = None):
        self.path = run_dir / METRICS
        if resume_iteration is not None and self.path.exists():
            records, torn = _parse_lines(self.path)
            if torn:
                print(f"metarl: dropped {torn} unreadable line(s) of {self.path} (a write that "
                      "was cut off)", file=sys.stderr)  # fmt: skip
            kept = [r for r in records if r["iteration"] <= resume_iteration]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
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


class NullLog:
    """The log of a process that does not write the run directory (ranks other than 0)."""

    def write(self, iteration: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The readable lines of a run's ``metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return _parse_lines(path)[0]


def log_evaluation(run_dir: Path, report: Any) -> None:
    """An evaluation into the run's TensorBoard events (when its config writes them): every
    method's score after each step, ``eval/<method>[ <setting>]/step <s>``, at the checkpoint
    it tested, and the config's hyperparameters beside the headline number (the HParams tab)."""
    if not report.config.get("tensorboard", False):
        return
    from torch.utils.tensorboard import SummaryWriter

    iteration = report.model.checkpoint_iteration
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        for curve in report.curves:
            name = curve.label + (f" {curve.setting}" if curve.setting else "")
            for step, mean in zip(curve.steps, curve.mean):
                writer.add_scalar(f"eval/{name}/step {step}", mean, iteration)
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                   for k, v in report.config.items()}  # fmt: skip
        headline = report.headline_values()[1]
        writer.add_hparams(hparams, {f"eval/{report.headline.label}": headline},
                           run_name="hparams", global_step=iteration)  # fmt: skip
