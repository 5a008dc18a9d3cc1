"""The meta-gradient of a meta-batch, written into the meta-parameters' ``.grad``: at once, or
chunk by chunk, the chunks optionally on worker threads.

An algorithm's meta-loss is a mean over tasks, so the meta-batch's gradient is the
task-weighted sum of its chunks' gradients: processing ``chunk_tasks`` tasks at a time bounds the
memory of the inner loop's graph, and keeps each chunk's activations small enough to stay in a
core's cache. With ``workers > 1`` (and one torch thread), the chunks run concurrently on Python
threads, each an independent single-threaded computation; their gradients are summed in chunk
order, so the result is the same on every run. ``torch.func.functional_call`` swaps a module's
tensors while it runs, so each worker thread runs its own replica of the model: a copy of the
module's structure that holds the very same parameter tensors (gradients reach the original).
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, MetaLoss, Problem
from metarl.core import TaskBatch
from metarl.distributed import World


class MetaGradient:
    """Computes a meta-batch's outer objective and its gradient.

    Args:
        params: the meta-parameters (the model's and the algorithm's), in the optimiser's order.
        chunk_tasks: tasks per chunk; 0: the whole meta-batch in one backward pass.
        workers: chunks computed at once (threads; each op then runs on its own thread).
        world: with several processes, this one's place: it computes its shard of the tasks,
            and the gradients, losses and metrics are summed over the processes.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        chunk_tasks: int = 0,
        workers: int = 1,
        world: World | None = None,
    ) -> None:
        if chunk_tasks < 0 or workers < 1:
            raise ValueError(
                f"need chunk_tasks >= 0 and workers >= 1, got {chunk_tasks}, {workers}"
            )
        self.params, self.chunk_tasks, self.world = params, chunk_tasks, world
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self._local = threading.local()

    def __call__(
        self,
        algorithm: MetaAlgorithm,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        iteration: int,
    ) -> MetaLoss:
        """The meta-loss of ``batch`` (detached) and its metrics; the gradient is in ``.grad``."""
        for p in self.params:
            p.grad = None
        n = batch.n_tasks
        first, last = (0, n) if self.world is None else self.world.shard(n)
        if self.world is None and (not self.chunk_tasks or self.chunk_tasks >= n):
            step = algorithm.meta_loss(model, batch, problem, iteration)
            step.loss.backward()
            return MetaLoss(step.loss.detach(), step.metrics)

        def chunk(span: tuple[int, int]) -> tuple[float, MetaLoss, tuple[Tensor | None, ...]]:
            start, stop = span
            weight = (stop - start) / n
            own = model if self._pool is None else self._replica(model)
            step = algorithm.meta_loss(own, batch.tasks(start, stop), problem, iteration)
            grads = torch.autograd.grad(step.loss * weight, self.params, allow_unused=True)
            return weight, step, grads

        size = self.chunk_tasks or (last - first)
        spans = [(s, min(s + size, last)) for s in range(first, last, size)]
        results = list(self._pool.map(chunk, spans) if self._pool else map(chunk, spans))
        for i, p in enumerate(self.params):
            grads = [g[i] for _, _, g in results if g[i] is not None]
            p.grad = torch.stack(grads).sum(dim=0) if grads else None
        loss = sum(w * step.loss.detach() for w, step, _ in results)
        metrics: dict[str, Any] = {}
        for w, step, _ in results:
            for key, value in step.metrics.items():
                metrics[key] = metrics.get(key, 0.0) + w * value
        if self.world is not None:
            loss, metrics = self._sum_over_processes(loss, metrics)  # type: ignore[arg-type]
        return MetaLoss(loss, metrics)  # type: ignore[arg-type]

    def _sum_over_processes(
        self, loss: Tensor, metrics: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Every process's share of the gradient, the loss and the metrics, summed: one
        all-reduce of one flat buffer (a parameter without a gradient anywhere keeps None)."""
        assert self.world is not None
        present = [p for p in self.params if p.grad is not None]
        keys = sorted(metrics)
        flat = torch.cat([
            *(p.grad.reshape(-1) for p in present),  # type: ignore[union-attr]
            loss.reshape(1).to(present[0].dtype if present else torch.float32),
            *(torch.as_tensor(metrics[k], dtype=torch.float32).reshape(1) for k in keys),
        ])  # fmt: skip
        self.world.sum_(flat)
        offset = 0
        for p in present:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        loss = flat[offset].clone()
        summed = {k: flat[offset + 1 + i].clone() for i, k in enumerate(keys)}
        return loss, summed

    def _replica(self, model: nn.Module) -> nn.Module:
        """This thread's copy of ``model``'s structure, sharing its parameters and buffers."""
        replica = getattr(self._local, "replica", None)
        if replica is None or self._local.source is not model:
            shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
            replica = copy.deepcopy(model, memo=shared)
            self._local.replica, self._local.source = replica, model
        return replica

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
