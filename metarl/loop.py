"""What the training loops share: Adam (fused where torch has it), the progress bars (every
bar's defaults, and the one over iterations), the session's wall-clock deadline, and when to
write a checkpoint."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def adam(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for the device (the same update; on the CPU
    one kernel instead of ~10 small ops per tensor, which matters for MAML's small models)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=lr)


LOGGED_BAR_SECONDS = 30.0
"""How often a progress bar redraws when stderr is not a terminal (a log file, a pipe): each
redraw is another line there, and a bar over hours would otherwise fill megabytes."""


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar with the house defaults: its width follows the terminal, in a notebook it is
    a widget, and written to a log instead it redraws every :data:`LOGGED_BAR_SECONDS` (unless
    ``TQDM_MININTERVAL`` says otherwise). Keywords are tqdm's."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    stream = kwargs.get("file") or sys.stderr
    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    logged = stream is None or not getattr(stream, "isatty", lambda: False)()
    if (
        logged
        and not notebook
        and not kwargs.get("disable")
        and "TQDM_MININTERVAL" not in os.environ
    ):
        kwargs.setdefault("mininterval", LOGGED_BAR_SECONDS)
    return tqdm(iterable, **kwargs)


def iteration_bar(config: Any, start: int, progress: bool = True) -> Any:
    """The progress bar over iterations ``start..config.iterations`` (tqdm; loss and it/s)."""
    return progress_bar(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        desc=config.experiment,
        disable=not progress,
        unit="it",
    )


def session_deadline(minutes: float | None) -> float | None:
    """The ``time.time()`` at which a session of ``minutes`` ends (None: no limit).

    Raises:
        ConfigError: a negative or NaN number of minutes.
    """
    if minutes is None:
        return None
    if not minutes >= 0:
        from metarl.config import ConfigError

        raise ConfigError(f"time limit: {minutes} minutes; give a number ≥ 0")
    return time.time() + 60.0 * minutes


def deadline_passed(stop_at: float | None) -> bool:
    """Whether a training session's wall-clock deadline (a ``time.time()``; None: none) has
    passed. Trainers look at it where a window of ``log_every`` iterations ends and stop there
    with a checkpoint, so a resume logs the same windows as an uninterrupted run."""
    return stop_at is not None and time.time() >= stop_at


class CheckpointSchedule:
    """When a trainer saves its checkpoint: every ``every`` iterations, and also where a
    ``log_every`` window ends once ``minutes`` of wall time have passed since the last save
    (0: never by time). Slow iterations (20-way Omniglot: ~20 s here; 1,000 of them between
    periodic checkpoints) would otherwise put hours of training at the mercy of a killed
    session. Saving only where a window ends keeps a resume's windows those of an uninterrupted
    run, so the numbers stay the same whenever the saves happen."""

    def __init__(
        self, every: int, minutes: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every, self.seconds, self.clock = every, 60.0 * minutes, clock
        self.last_saved = clock()

    def due(self, done: int, window_ends: bool) -> bool:
        """Whether to save after ``done`` iterations (``window_ends``: a log window ends there)."""
        if done % self.every == 0:
            return True
        return window_ends and self.seconds > 0 and self.clock() - self.last_saved >= self.seconds

    def saved(self) -> None:
        """Note that a checkpoint was just written."""
        self.last_saved = self.clock()
