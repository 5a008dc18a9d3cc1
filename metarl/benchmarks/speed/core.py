"""``speed-core``: meta-iterations per second of the sinusoid MAML update
(meta-batch 25, K=10, 1-40-40-1 MLP, one second-order inner step, Adam) for

* ``per-task loop`` — how other libraries write it: for each task, the module's forward, an
  ``autograd.grad(create_graph=True)`` inner step, the query loss; sum; backward;
* ``metarl (vmap)`` — the core on a plain ``nn.Sequential`` (``torch.func.vmap`` over tasks);
* ``metarl`` — the core on :class:`metarl.core.MLP`, whose layers run all tasks in one
  batched matmul;
* ``metarl, 2 chunks on 2 workers`` — the same, through the trainer's
  :class:`~metarl.supervised.meta_gradient.MetaGradient` with the meta-batch in two chunks on two
  worker threads of one torch thread each (``chunk_tasks=13 chunk_workers=2``; its "2 threads"
  column is the two workers). It pays off for Conv-4 (``speed-omniglot``), not for ops this small.

All three see the same tasks and compute the same meta-gradient (checked before timing). Each is
timed with 1 and 2 torch threads, in interleaved rounds (timings here are noisy; the median of
the rounds is reported). Peak memory is the peak resident-set growth of a fresh process running
the variant, since the CPU allocator keeps no per-variant statistics.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarl.benchmarks.common import machine_info, peak_memory_mib
from metarl.core import MLP, TaskBatch, adapt, expand_to_tasks, get_params, task_forward
from metarl.core.step_size import as_step_size
from metarl.loop import adam
from metarl.supervised.sinusoid import SinusoidTasks
from metarl.supervised.tasks import mse_per_task

META_BATCH, K, INNER_LR = 25, 10, 0.01
WORKERS = "metarl, 2 chunks on 2 workers"
VARIANTS = ("per-task loop", "metarl (vmap)", "metarl", WORKERS)


def _plain_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
    )


def _native_model(plain: nn.Module) -> nn.Module:
    model = MLP((1, 40, 40, 1))
    model.load_state_dict(plain.state_dict())
    return model


def _loop_meta_loss(model: nn.Module, batch: TaskBatch) -> Tensor:
    """The per-task reference: one inner step per task in a Python loop."""
    params = dict(model.named_parameters())
    total = torch.zeros(())
    for i in range(batch.support_x.shape[0]):
        support = functional_call(model, params, (batch.support_x[i],))
        loss = (support - batch.support_y[i]).pow(2).mean()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        fast = {n: p - INNER_LR * g for (n, p), g in zip(params.items(), grads)}
        query = functional_call(model, fast, (batch.query_x[i],))
        total = total + (query - batch.query_y[i]).pow(2).mean()
    return total / batch.support_x.shape[0]


def _core_meta_loss(model: nn.Module, batch: TaskBatch) -> Tensor:
    """metarl: all tasks as one task batch."""
    theta = expand_to_tasks(get_params(model), batch.support_x.shape[0])
    adapted = adapt(
        lambda p: mse_per_task(task_forward(model, p, batch.support_x), batch.support_y),
        theta,
        INNER_LR,
    )
    return mse_per_task(task_forward(model, adapted, batch.query_x), batch.query_y).mean()


def _model(variant: str) -> nn.Module:
    plain = _plain_model()
    return _native_model(plain) if variant in ("metarl", WORKERS) else plain


def _backward(variant: str, model: nn.Module) -> Callable[[TaskBatch], None]:
    """The variant's meta-gradient on a batch, into the parameters' ``.grad``."""
    if variant == WORKERS:
        from metarl.algorithms.base import Problem
        from metarl.algorithms.maml import MAML
        from metarl.supervised.meta_gradient import MetaGradient

        algorithm, problem = MAML(as_step_size(INNER_LR)), Problem(mse_per_task)
        compute = MetaGradient(list(model.parameters()), (META_BATCH + 1) // 2, workers=2)

        def in_chunks(batch: TaskBatch) -> None:
            torch.set_num_threads(1)  # each worker is one thread
            compute(algorithm, model, batch, problem, iteration=0)

        return in_chunks
    meta_loss = _loop_meta_loss if variant == "per-task loop" else _core_meta_loss
    return lambda batch: meta_loss(model, batch).backward()


def _make_step(variant: str) -> Callable[[TaskBatch], None]:
    model = _model(variant)
    backward = _backward(variant, model)
    optimizer = adam(model.parameters(), 1e-3)

    def step(batch: TaskBatch) -> None:
        optimizer.zero_grad(set_to_none=True)
        backward(batch)
        optimizer.step()

    return step


def _batches(n: int, seed: int = 0) -> list[TaskBatch]:
    tasks, gen = SinusoidTasks(), torch.Generator().manual_seed(seed)
    return [tasks.sample(META_BATCH, K, K, gen)[0] for _ in range(n)]


def _memory_setup(variant: str, iterations: int) -> tuple[Callable[[TaskBatch], None], list]:
    return _make_step(variant), _batches(iterations)


def check_same_meta_gradient() -> float:
    """Largest difference between the variants' meta-gradients on one batch (should be ~1e-7)."""
    batch = _batches(1)[0]
    grads = []
    for variant in VARIANTS:
        model = _model(variant)
        _backward(variant, model)(batch)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))  # type: ignore[union-attr]
    return max((g - grads[0]).abs().max().item() for g in grads[1:])


def bench_sinusoid(iterations: int = 200, rounds: int = 5, progress: bool = True) -> dict[str, Any]:
    """Iterations/s of every variant and thread count, interleaved; see the module docstring."""
    threads_before = torch.get_num_threads()
    max_diff = check_same_meta_gradient()
    steps = {v: _make_step(v) for v in VARIANTS}
    batches = _batches(iterations)
    # The loop is ~10x slower: give it fewer iterations per round so rounds take similar time.
    n_iter = {
        v: max(10, iterations // 10) if v == "per-task loop" else iterations for v in VARIANTS
    }
    times: dict[tuple[str, int], list[float]] = {}
    runs = [(v, t) for t in (1, 2) for v in VARIANTS if v != WORKERS or t == 2]
    for v, threads in runs:  # warm-up
        torch.set_num_threads(threads)
        for batch in batches[:10]:
            steps[v](batch)
    for r in range(rounds):
        for v, threads in runs:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for batch in batches[: n_iter[v]]:
                steps[v](batch)
            times.setdefault((v, threads), []).append(n_iter[v] / (time.perf_counter() - start))
        if progress:
            print(f"  round {r + 1}/{rounds} done", flush=True)
    torch.set_num_threads(threads_before)
    rates = {key: statistics.median(vals) for key, vals in times.items()}
    rows = []
    for v in VARIANTS:
        best_threads = max((t for t in (1, 2) if (v, t) in rates), key=lambda t: rates[(v, t)])
        rows.append(
            {
                "variant": v,
                "it_per_s_1_thread": rates.get((v, 1)),
                "it_per_s_2_threads": rates[(v, 2)],
                "best_threads": best_threads,
                "best_it_per_s": rates[(v, best_threads)],
                "peak_memory_mib": peak_memory_mib(_memory_setup, v),
            }
        )
    loop_best = rows[0]["best_it_per_s"]
    for row in rows:
        row["speedup_vs_loop"] = row["best_it_per_s"] / loop_best
    return {
        "benchmark": "sinusoid",
        "setting": f"meta-batch {META_BATCH}, K={K}, 1-40-40-1 MLP, 1 second-order step, Adam",
        "max_meta_gradient_difference": max_diff,
        "rows": rows,
        "machine": machine_info(),
    }


def format_sinusoid(result: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_sinusoid`'s result."""
    lines = [
        f"sinusoid MAML meta-iteration ({result['setting']})",
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']}",
        f"meta-gradients agree to {result['max_meta_gradient_difference']:.1e}",
        "",
        "| variant | it/s (1 thread) | it/s (2 threads) | best | speed-up vs loop | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        one = "—" if r["it_per_s_1_thread"] is None else f"{r['it_per_s_1_thread']:.1f}"
        lines.append(
            f"| {r['variant']} | {one} | {r['it_per_s_2_threads']:.1f} | "
            f"{'2 workers' if r['variant'] == WORKERS else str(r['best_threads']) + ' thr'} | "
            f"{r['speedup_vs_loop']:.1f}x | "
            f"{r['peak_memory_mib']:.1f} MiB |"
        )
    return "\n".join(lines)
