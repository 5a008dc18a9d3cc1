"""Seeded construction without touching the global random state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside, torch's global CPU generator is seeded with ``seed``; afterwards it is as before.

    Module constructors draw their initial weights from the global generator; building a model
    under ``seeded(seed)`` gives the weights ``torch.manual_seed(seed)`` would, without changing
    the random state that the caller's own code sees.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
