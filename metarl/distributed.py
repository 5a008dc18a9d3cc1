"""Meta-training on several processes (``torchrun``): who this process is, its share of the tasks,
and the sums that make every process take the same step.

``torchrun --nproc-per-node N -m metarl train EXPERIMENT`` starts N processes with ``RANK``,
``WORLD_SIZE`` and a rendezvous in their environment; :func:`init_world` joins them (``gloo`` on
the CPU, ``nccl`` for CUDA devices). Every process draws the same meta-batch of tasks from the
same seeded generators and works on its shard (:meth:`World.shard`); the meta-gradient (and for
MAML-TRPO every Fisher-vector product and the line search's values) is summed over processes,
each shard weighted by its share of the tasks, so every process takes the same step from the same
parameters — the step one process would take, up to the order of float32 additions. Rank 0 alone
writes the run directory. A meta-batch that does not divide evenly gives some processes one task
more; more processes than tasks is refused.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from metarl.config import ConfigError
from metarl.run import RunError


class Shard(NamedTuple):
    """Tasks ``[start, stop)`` of a meta-batch of ``total``: this process's rows of anything
    drawn for the whole batch (so random draws match those of one process)."""

    start: int
    stop: int
    total: int


class PeerLost(RunError):
    """Another process of a distributed run stopped (crashed, killed, out of memory)."""


@dataclass
class World:
    """This process's place among the ``size`` processes of a run.

    ``communication_seconds`` adds up the wall time spent in the sums, waiting for the slowest
    process included (what distributing costs; the trainers log it as ``time/communication``).
    """

    rank: int
    size: int
    communication_seconds: float = field(default=0.0, compare=False)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory, the logs and the checkpoints."""
        return self.rank == 0

    def shard(self, n_tasks: int) -> tuple[int, int]:
        """``[start, stop)``: this process's tasks of a meta-batch of ``n_tasks`` (contiguous;
        the first ``n_tasks % size`` processes take one more).

        Raises:
            ConfigError: fewer tasks than processes.
        """
        if n_tasks < self.size:
            raise ConfigError(
                f"meta_batch_size {n_tasks} is smaller than the {self.size} processes: every "
                "process needs at least one task"
            )
        base, extra = divmod(n_tasks, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def task_shard(self, n_tasks: int) -> Shard:
        """:meth:`shard` with the meta-batch's size."""
        return Shard(*self.shard(n_tasks), n_tasks)

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the processes, in place; returns it."""
        started = time.perf_counter()
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except RuntimeError as e:  # gloo/NCCL: a peer's connection broke
            raise PeerLost(
                f"process {self.rank} of {self.size}: another process of this run stopped "
                f"({str(e).splitlines()[0][:120]}); torchrun's summary names it. The last "
                "checkpoint is intact: `metarl train EXPERIMENT --resume RUN` continues on any "
                "number of processes"
            ) from e
        self.communication_seconds += time.perf_counter() - started
        return tensor

    def sum_float(self, value: float) -> float:
        """A number summed over the processes."""
        return float(self.sum_(torch.tensor([value], dtype=torch.float64))[0])


def init_world(device: str = "cpu") -> World | None:
    """Join the processes ``torchrun`` started, or None when this process runs alone.

    Raises:
        ConfigError: a launcher's environment without the rendezvous variables.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return None
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise ConfigError("WORLD_SIZE is set but MASTER_ADDR is not: start with torchrun")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":  # one GPU per process: "cuda" means this process's own
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size())


def close_world(finished: bool = False) -> None:
    """Leave the process group (at the end of a distributed command).

    ``finished``: every process reached the end of its work. They then wait for each other
    first, so that none tears down its connections while a peer still uses them (a process that
    left early could be aborted in gloo's teardown), and the group's C++ objects are freed while
    the interpreter is fully alive, not during its finalisation. After an error no process waits:
    a peer stuck in a sum would never reach the barrier.
    """
    if not dist.is_initialized():
        return
    if finished:
        try:
            dist.barrier()
        except RuntimeError:  # a peer is gone: nothing left to wait for
            pass
    dist.destroy_process_group()
    gc.collect()


@dataclass(frozen=True)
class TaskReduction:
    """How per-task values become the meta-batch's mean.

    Alone, ``per_task.mean()``. With several processes, each process holds some of the tasks:
    its share of the mean is ``Σ_its tasks / n_total`` (differentiable, :meth:`share`), and the
    shares summed over the processes (:meth:`total`, also of gradients and Fisher-vector
    products) are the mean of the whole meta-batch.
    """

    world: World | None = None
    n_total: int = 0

    def share(self, per_task: Tensor) -> Tensor:
        """This process's share of the mean over all tasks of ``per_task (n_local,)``."""
        return per_task.mean() if self.world is None else per_task.sum() / self.n_total

    def total(self, tensor: Tensor) -> Tensor:
        """The processes' shares summed (a new tensor without a graph; alone, ``tensor``)."""
        return tensor if self.world is None else self.world.sum_(tensor.detach().clone())

    def total_float(self, value: float) -> float:
        """A number summed over the processes (alone, itself)."""
        return value if self.world is None else self.world.sum_float(value)


ALONE = TaskReduction()
"""The reduction of a process that runs alone: plain means."""
