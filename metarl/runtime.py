"""Process tuning for speed: OpenMP spin-waiting, glibc's malloc, torch's thread count.

Importing metarl changes nothing outside it. The ``metarl`` command calls :func:`tune_process`
first thing, before torch loads; a library user who wants the same speed calls it explicitly,
also before importing torch. None of these settings changes a number, only how fast it comes.

OpenMP spin
    After each parallel op, torch's OpenMP workers (libgomp) spin for ``GOMP_SPINCOUNT`` =
    300,000 iterations by default before they sleep. Meta-RL rollouts alternate a tiny batched
    policy forward with ~1 ms of MuJoCo physics on a thread pool, so spinning workers take the
    cores from the physics threads at every step. A spin of 10,000 still covers the gap between
    the back-to-back matmuls of a Fisher-vector product, so the update keeps its speed while the
    workers sleep through the physics. Measured on the 2-core reference machine (HalfCheetah-vel
    reference config, interleaved runs; its speed drifts by ±15–30%): sampling 5.7 s → 4.7 s per
    meta-iteration on average (10 and 8 runs), the update unchanged (4.7–6.5 s either way).
    ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) made sampling as fast but the update 0.6 s slower.
    libgomp reads the variable once, when it is loaded: if torch is already imported nothing is
    set, rather than leaving a setting in the environment that this process ignores. A
    ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` already in the environment wins.

glibc's malloc
    See :func:`retain_freed_memory`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import MutableMapping

SPIN_COUNT = 10_000


def shorten_openmp_spin(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user chose a waiting policy.

    Args:
        environ: the environment to set it in (the process's own by default).

    Returns:
        Whether it was set here.
    """
    environ = os.environ if environ is None else environ
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's malloc.h
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024 - 1  # glibc's ceiling on 64-bit systems


@functools.cache  # once per process
def retain_freed_memory() -> bool:
    """Stop glibc from handing every large freed tensor back to the kernel.

    By default glibc serves allocations above a threshold with their own ``mmap`` and unmaps
    them on free, so an autograd pass over tens of megabytes of activations page-faults its
    memory in again on every call (meta-RL's Fisher-vector products: a third of the update
    time went to the kernel here). Raising the mmap and trim thresholds keeps freed blocks
    in the heap for reuse, as jemalloc or tcmalloc would. Only touches glibc's allocator;
    returns whether it did (False elsewhere, e.g. macOS or musl).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
        return mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False


def tune_process() -> None:
    """The ``metarl`` command's process settings: short OpenMP spin (only if torch is not loaded
    yet) and glibc's malloc keeping freed memory. Call it before importing torch."""
    if "torch" not in sys.modules:
        shorten_openmp_spin()
    retain_freed_memory()


def set_num_threads(num_threads: int) -> None:
    """Use ``num_threads`` torch CPU threads (0 keeps torch's default).

    Small MAML models are fastest single-threaded here: with 2 threads the tiny batched ops
    spend more time synchronising than computing (``metarl bench --suite paper --only
    speed-core``); meta-RL's large episode batches are not small, and their configs ask for
    every core.

    Set it once per process and leave it: with torch 2.13.0+cpu, switching the thread count
    back and forth (1 → 2) made MKL's batched LU solve return garbage, without an error, for
    the 214-feature systems of Ant's linear baseline (smaller systems were unaffected).
    """
    import torch

    if num_threads > 0:
        torch.set_num_threads(num_threads)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(needed: float, knobs: str) -> None:
    """Refuse a run whose estimated memory exceeds what this machine has available.

    Args:
        needed: an estimate of one meta-iteration's memory in bytes (a lower bound: the check
            only catches what cannot fit).
        knobs: the config keys that set it, named in the message.

    Raises:
        ConfigError: ``needed`` is above the available memory.
    """
    from metarl.config import ConfigError

    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{knobs}: one meta-iteration needs at least {needed / 2**30:.1f} GiB, more than "
            f"the {available / 2**30:.1f} GiB available here; make it smaller"
        )


def missing_extra(package: str, extra: str, purpose: str) -> ImportError:
    """The error to raise when an optional dependency is not installed, naming the extra that
    brings it: ``pip install 'metarl[EXTRA]'``."""
    return ImportError(
        f"{package} is not installed; {purpose} need it: pip install 'metarl[{extra}]'"
    )
