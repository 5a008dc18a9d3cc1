"""``speed-omniglot``: meta-iterations per second and peak memory of the Omniglot
5-way 1-shot MAML update (meta-batch 32, 1 support + 1 query image per class, Conv-4 with 64
filters, one inner step with α = 0.4, Adam), second and first order, for

* ``per-task loop`` — the way other libraries write it (learn2learn's and higher's Omniglot
  examples): for each task, the module's forward on its 5 support images, an
  ``autograd.grad`` inner step (``create_graph`` in second order), the query loss, and a
  ``backward`` per task that accumulates the meta-gradient;
* ``metarl (vmap)`` — the core on a plain ``torch.nn`` Conv-4 (``torch.func.vmap`` over tasks);
* ``metarl`` — the core on :class:`metarl.supervised.conv4.Conv4`, whose layers run all 32
  tasks as one grouped convolution / one BatchNorm (:mod:`metarl.core.conv`).

All variants see the same episodes and compute the same meta-gradient (checked before timing).
Timed with one torch thread (the machines running this are shared), in interleaved rounds; the
median round is reported. Peak memory is the peak resident-set growth of a fresh process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metarl.benchmarks.common import machine_info, peak_memory_mib
from metarl.core import TaskBatch, adapt, expand_to_tasks, get_params, task_forward
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.episodes import sample_episodes
from metarl.supervised.data.omniglot import load_omniglot, omniglot_split
from metarl.supervised.tasks import cross_entropy_per_task

META_BATCH, N_WAY, K_SHOT, K_QUERY, INNER_LR = 32, 5, 1, 1, 0.4
VARIANTS = ("per-task loop", "metarl (vmap)", "metarl")
MODES = ("second_order", "first_order")


class PlainConv4(nn.Module):
    """Conv-4 from stock ``torch.nn`` layers, with the parameter names of :class:`Conv4`."""

    def __init__(self, n_classes: int = N_WAY, filters: int = 64) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for c_in in (1, filters, filters, filters):
            block = nn.Module()
            block.conv = nn.Conv2d(c_in, filters, 3, stride=2, padding=1)
            block.bn = nn.BatchNorm2d(filters, track_running_stats=False)
            self.blocks.append(block)
        self.head = nn.Linear(filters, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = F.relu(block.bn(block.conv(x)))
        return self.head(x.mean(dim=(-2, -1)))


def _model(variant: str) -> nn.Module:
    torch.manual_seed(0)
    native = Conv4(N_WAY)
    if variant == "metarl":
        return native
    plain = PlainConv4()
    plain.load_state_dict(native.state_dict())
    return plain


def _loop_backward(model: nn.Module, batch: TaskBatch, mode: str) -> Tensor:
    """Per-task loop: adapt, query loss, backward (gradients accumulate), task by task."""
    params = dict(model.named_parameters())
    n_tasks = batch.support_x.shape[0]
    total = torch.zeros(())
    for i in range(n_tasks):
        support = functional_call(model, params, (batch.support_x[i],))
        loss = F.cross_entropy(support, batch.support_y[i])
        grads = torch.autograd.grad(
            loss, list(params.values()), create_graph=mode == "second_order"
        )
        fast = {n: p - INNER_LR * g for (n, p), g in zip(params.items(), grads)}
        query = F.cross_entropy(functional_call(model, fast, (batch.query_x[i],)), batch.query_y[i])
        (query / n_tasks).backward()
        total = total + query.detach() / n_tasks
    return total


def _core_backward(model: nn.Module, batch: TaskBatch, mode: str) -> Tensor:
    """metarl: all tasks as one task batch, one backward."""
    theta = expand_to_tasks(get_params(model), batch.support_x.shape[0])
    adapted = adapt(
        lambda p: cross_entropy_per_task(task_forward(model, p, batch.support_x), batch.support_y),
        theta,
        INNER_LR,
        mode=mode,  # type: ignore[arg-type]
    )
    loss = cross_entropy_per_task(task_forward(model, adapted, batch.query_x), batch.query_y).mean()
    loss.backward()
    return loss.detach()


def _make_step(variant: str, mode: str) -> tuple[nn.Module, Callable[[TaskBatch], None]]:
    model = _model(variant)
    backward = _loop_backward if variant == "per-task loop" else _core_backward
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: TaskBatch) -> None:
        optimizer.zero_grad(set_to_none=True)
        backward(model, batch, mode)
        optimizer.step()

    return model, step


def _batches(n: int, seed: int = 0) -> list[TaskBatch]:
    classes = omniglot_split(load_omniglot(), "maml", "train")
    gen = torch.Generator().manual_seed(seed)
    return [sample_episodes(classes, META_BATCH, N_WAY, K_SHOT, K_QUERY, gen) for _ in range(n)]


def _memory_setup(variant_mode: str, iterations: int) -> tuple[Callable[[TaskBatch], None], list]:
    variant, mode = variant_mode.split("|")
    return _make_step(variant, mode)[1], _batches(iterations)


def meta_gradient_difference(batch: TaskBatch, mode: str) -> float:
    """Largest difference between the variants' meta-gradients on ``batch``."""
    grads = []
    for variant in VARIANTS:
        model = _model(variant)
        (_loop_backward if variant == "per-task loop" else _core_backward)(model, batch, mode)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))  # type: ignore[union-attr]
    return max((g - grads[0]).abs().max().item() for g in grads[1:])


def bench_omniglot(iterations: int = 20, rounds: int = 2, progress: bool = True) -> dict[str, Any]:
    """Iterations/s and peak memory of every variant and mode; see the module docstring.

    Args:
        iterations: timed meta-iterations per variant and mode (split over ``rounds``).
        rounds: interleaved timing rounds (the median is reported).
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    batches = _batches(max(iterations // rounds, 1) + 2)
    diffs = {mode: meta_gradient_difference(batches[0], mode) for mode in MODES}
    steps = {(v, m): _make_step(v, m)[1] for v in VARIANTS for m in MODES}
    for step in steps.values():  # warm-up (allocator, oneDNN kernel selection)
        step(batches[0])
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            for batch in batches[2:]:
                step(batch)
            times.setdefault(key, []).append(len(batches[2:]) / (time.perf_counter() - start))
        if progress:
            print(f"  round {r + 1}/{rounds} done", flush=True)
    torch.set_num_threads(threads_before)
    rows = []
    for mode in MODES:
        loop_rate = statistics.median(times[("per-task loop", mode)])
        for v in VARIANTS:
            rate = statistics.median(times[(v, mode)])
            rows.append(
                {
                    "mode": mode,
                    "variant": v,
                    "it_per_s": rate,
                    "speedup_vs_loop": rate / loop_rate,
                    "peak_memory_mib": peak_memory_mib(_memory_setup, f"{v}|{mode}", 3),
                }
            )
    return {
        "benchmark": "omniglot",
        "setting": f"Omniglot {N_WAY}-way {K_SHOT}-shot, meta-batch {META_BATCH}, {K_QUERY} "
        f"query/class, Conv-4 (64 filters), 1 inner step, Adam, 1 thread",
        "max_meta_gradient_difference": diffs,
        "rows": rows,
        "machine": machine_info(),
    }


def format_omniglot(result: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_omniglot`'s result."""
    diffs = ", ".join(f"{m} {d:.1e}" for m, d in result["max_meta_gradient_difference"].items())
    lines = [
        f"Omniglot MAML meta-iteration ({result['setting']})",
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']}",
        f"meta-gradients agree to: {diffs}",
        "",
        "| mode | variant | it/s | speed-up vs loop | peak memory |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['it_per_s']:.2f} | "
            f"{r['speedup_vs_loop']:.1f}x | {r['peak_memory_mib']:.0f} MiB |"
        )
    return "\n".join(lines)
