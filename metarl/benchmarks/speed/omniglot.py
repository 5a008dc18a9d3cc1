"""``speed-omniglot``: meta-iterations per second and peak memory of MAML's Omniglot update, for
the paper's 5-way 1-shot (meta-batch 32, one inner step with α = 0.4; second and first order) and
20-way 1-shot (meta-batch 16, five inner steps with α = 0.1; second order) settings, Conv-4 with
64 filters, one query image per class, Adam:

* ``per-task loop`` — the way other libraries write it (learn2learn's and higher's Omniglot
  examples): for each task, a stock ``torch.nn`` Conv-4's forward on its support images,
  ``autograd.grad`` inner steps (``create_graph`` in second order), the query loss, and a
  ``backward`` per task that accumulates the meta-gradient; timed with 1 and with 2 torch threads;
* ``metarl (vmap)`` — the core on that stock module (``torch.func.vmap`` over tasks);
* ``metarl`` — what ``metarl train`` runs: :class:`metarl.algorithms.maml.MAML` on
  :class:`metarl.supervised.conv4.Conv4` (all tasks as one grouped convolution / one BatchNorm)
  through the trainer's :class:`~metarl.supervised.meta_gradient.MetaGradient`, the whole
  meta-batch at once (1 and 2 torch threads), in chunks of :data:`CHUNK` tasks
  (``chunk_tasks``), and in chunks on two worker threads of one torch thread each
  (``chunk_workers=2``: both cores of a 2-core machine).

All variants see the same episodes and compute the same meta-gradient, each under its own thread
settings (checked before timing). They are timed in interleaved rounds and the median round is
reported, with the speed-up over the **best** per-task loop (1 or 2 threads). The work of one
meta-iteration is counted by :class:`torch.utils.flop_counter.FlopCounterMode` and divided by each
variant's time (achieved GFLOP/s), next to a float32 GEMM's rate on 1 and 2 threads measured in
the same run, the practical ceiling. Peak memory is the peak resident-set growth of a fresh process.

MNIST's and Fashion-MNIST's 5-way 1-shot configs run exactly these shapes (28 × 28 grey images,
the same network and meta-batch), so the 5-way rows apply to them too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from metarl.algorithms import make_algorithm
from metarl.benchmarks.common import machine_info, peak_memory_mib
from metarl.core import TaskBatch, adapt, expand_to_tasks, get_params, task_forward
from metarl.supervised.classification_experiment import build_model, problem
from metarl.supervised.data.episodes import sample_episodes
from metarl.supervised.data.omniglot import load_omniglot, omniglot_split
from metarl.supervised.meta_gradient import MetaGradient
from metarl.supervised.tasks import cross_entropy_per_task

CHUNK = 8
"""Tasks per chunk in the chunked variants (measured best of 4, 8 and 16 here)."""


@dataclass(frozen=True)
class Setting:
    """One benchmarked configuration: an experiment's paper config, its numbers copied here."""

    experiment: str
    name: str
    n_way: int
    meta_batch: int
    inner_steps: int
    inner_lr: float
    modes: tuple[str, ...]

    def config(self, mode: str) -> Any:
        """The experiment's config, in ``mode``."""
        from metarl.experiments import load_config

        return load_config(self.experiment, {"meta_gradient": mode})


def _setting(experiment: str, modes: tuple[str, ...]) -> Setting:
    from metarl.experiments import load_config

    c = load_config(experiment)
    name = f"Omniglot {c.n_way}-way {c.k_shot}-shot"
    return Setting(experiment, name, c.n_way, c.meta_batch_size, c.inner_steps, c.inner_lr, modes)


SETTINGS = {
    "5w1s": _setting("omniglot-5w1s", ("second_order", "first_order")),
    "20w1s": _setting("omniglot-20w1s", ("second_order",)),
}


@dataclass(frozen=True)
class Variant:
    """How a meta-iteration is computed: ``kind`` is ``loop``, ``vmap`` or ``metarl``."""

    label: str
    kind: str
    threads: int = 1
    chunk_tasks: int = 0
    workers: int = 1


VARIANTS = (
    Variant("per-task loop", "loop", threads=1),
    Variant("per-task loop, 2 threads", "loop", threads=2),
    Variant("metarl (vmap)", "vmap"),
    Variant("metarl", "metarl"),
    Variant("metarl, 2 threads", "metarl", threads=2),
    Variant(f"metarl, chunks of {CHUNK}", "metarl", chunk_tasks=CHUNK),
    Variant(f"metarl, chunks of {CHUNK} on 2 workers", "metarl", chunk_tasks=CHUNK, workers=2),
)
VARIANT = {v.label: v for v in VARIANTS}


class PlainConv4(nn.Module):
    """Conv-4 from stock ``torch.nn`` layers, with the parameter names of :class:`Conv4`."""

    def __init__(self, n_classes: int = 5, filters: int = 64) -> None:
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


def _loop_backward(model: nn.Module, batch: TaskBatch, setting: Setting, mode: str) -> None:
    """Per-task loop: adapt, query loss, backward (gradients accumulate), task by task."""
    params = dict(model.named_parameters())
    n_tasks = batch.support_x.shape[0]
    for i in range(n_tasks):
        fast = params
        for _ in range(setting.inner_steps):
            support = functional_call(model, fast, (batch.support_x[i],))
            loss = F.cross_entropy(support, batch.support_y[i])
            grads = torch.autograd.grad(
                loss, list(fast.values()), create_graph=mode == "second_order"
            )
            fast = {n: p - setting.inner_lr * g for (n, p), g in zip(fast.items(), grads)}
        query = F.cross_entropy(functional_call(model, fast, (batch.query_x[i],)), batch.query_y[i])
        (query / n_tasks).backward()


def _vmap_backward(model: nn.Module, batch: TaskBatch, setting: Setting, mode: str) -> None:
    """The core on a stock module: all tasks as one task batch, one backward."""

    def support_loss(p: dict[str, Tensor]) -> Tensor:
        return cross_entropy_per_task(task_forward(model, p, batch.support_x), batch.support_y)

    theta = expand_to_tasks(get_params(model), batch.support_x.shape[0])
    adapted = adapt(support_loss, theta, setting.inner_lr, setting.inner_steps, mode=mode)  # type: ignore[arg-type]
    query = cross_entropy_per_task(task_forward(model, adapted, batch.query_x), batch.query_y)
    query.mean().backward()


def _variant(
    setting: Setting, variant: Variant, mode: str
) -> tuple[nn.Module, Callable[[TaskBatch], None]]:
    """The variant's model and its meta-gradient computation (into ``.grad``) on a batch.

    ``metarl`` is what ``metarl train`` runs: the experiment's model, algorithm and problem from
    its config, through the trainer's :class:`MetaGradient`. The stock module of the others
    starts from the same weights."""
    config = setting.config(mode)
    native = build_model(config)
    if variant.kind == "metarl":
        algorithm, task_problem = make_algorithm(config, native), problem(config)
        compute = MetaGradient(list(native.parameters()), variant.chunk_tasks, variant.workers)

        def trainer_backward(batch: TaskBatch) -> None:
            compute(algorithm, native, batch, task_problem, iteration=0)

        return native, trainer_backward
    plain = PlainConv4(setting.n_way)
    plain.load_state_dict(native.state_dict())
    backward = _loop_backward if variant.kind == "loop" else _vmap_backward
    return plain, lambda batch: backward(plain, batch, setting, mode)


def _make_step(setting: Setting, variant: Variant, mode: str) -> Callable[[TaskBatch], None]:
    """One meta-iteration of the variant (meta-gradient and Adam step) on a batch, under its
    own thread count."""
    model, backward = _variant(setting, variant, mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: TaskBatch) -> None:
        torch.set_num_threads(variant.threads)
        optimizer.zero_grad(set_to_none=True)
        backward(batch)
        optimizer.step()

    return step


def _batches(n: int, setting: Setting = SETTINGS["5w1s"], seed: int = 0) -> list[TaskBatch]:
    classes = omniglot_split(load_omniglot(), "maml", "train")
    gen = torch.Generator().manual_seed(seed)
    return [
        sample_episodes(classes, setting.meta_batch, setting.n_way, 1, 1, gen) for _ in range(n)
    ]


def _memory_setup(key: str, iterations: int) -> tuple[Callable[[TaskBatch], None], list]:
    key, label, mode = key.split("|")
    setting = SETTINGS[key]
    return _make_step(setting, VARIANT[label], mode), _batches(iterations, setting)


def meta_gradient(setting: Setting, variant: Variant, mode: str, batch: TaskBatch) -> Tensor:
    """The variant's meta-gradient on ``batch`` (flat, in the parameters' order), computed under
    its own thread count."""
    model, backward = _variant(setting, variant, mode)
    torch.set_num_threads(variant.threads)
    backward(batch)
    return torch.cat([p.grad.flatten() for p in model.parameters()])  # type: ignore[union-attr]


def meta_gradient_difference(
    batch: TaskBatch,
    mode: str,
    setting: Setting = SETTINGS["5w1s"],
    variants: tuple[Variant, ...] = VARIANTS,
) -> float:
    """Largest difference between the variants' meta-gradients on ``batch`` and the first's."""
    grads = [meta_gradient(setting, v, mode, batch) for v in variants]
    return max((g - grads[0]).abs().max().item() for g in grads[1:])


def flops_per_iteration(setting: Setting, mode: str, batch: TaskBatch) -> float:
    """Floating-point operations of one meta-gradient (inner steps, query pass, backward),
    counted on the per-task loop: every variant computes the same thing, and
    :class:`FlopCounterMode`'s formula for a grouped convolution's backward counts every group
    against the whole input (about 16 times the work here)."""
    _, backward = _variant(setting, VARIANTS[0], mode)
    with FlopCounterMode(display=False) as counter:
        backward(batch)
    return float(counter.get_total_flops())


def gemm_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """Best float32 matrix-multiply rate (GFLOP/s) of ``size`` × ``size`` matrices."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def bench_omniglot(
    iterations: int = 20,
    rounds: int = 2,
    settings: tuple[str, ...] = ("5w1s", "20w1s"),
    progress: bool = True,
) -> dict[str, Any]:
    """Iterations/s, GFLOP/s and peak memory of every variant; see the module docstring.

    Args:
        iterations: timed meta-iterations per variant, setting and mode (split over ``rounds``).
        rounds: interleaved timing rounds (the median is reported).
        settings: keys of :data:`SETTINGS` to measure.
    """
    threads_before = torch.get_num_threads()
    gemm = {str(t): gemm_gflops(t) for t in (1, 2)}  # JSON keys
    rows, checks = [], {}
    for key in settings:
        setting = SETTINGS[key]
        batches = _batches(max(iterations // rounds, 1) + 1, setting)
        for mode in setting.modes:
            checks[f"{key} {mode}"] = meta_gradient_difference(batches[0], mode, setting)
            flops = flops_per_iteration(setting, mode, batches[0])
            steps = {v.label: _make_step(setting, v, mode) for v in VARIANTS}
            for step in steps.values():  # warm-up (allocator, oneDNN kernel selection)
                step(batches[0])
            rates: dict[str, list[float]] = {}
            for r in range(rounds):
                for label, step in steps.items():
                    start = time.perf_counter()
                    for batch in batches[1:]:
                        step(batch)
                    rates.setdefault(label, []).append(
                        len(batches[1:]) / (time.perf_counter() - start)
                    )
                if progress:
                    print(f"  {setting.name} {mode}: round {r + 1}/{rounds} done", flush=True)
            median = {label: statistics.median(r) for label, r in rates.items()}
            best_loop = max(median[v.label] for v in VARIANTS if v.kind == "loop")
            for v in VARIANTS:
                rows.append({
                    "setting": key, "mode": mode, "variant": v.label,
                    "it_per_s": median[v.label],
                    "speedup_vs_best_loop": median[v.label] / best_loop,
                    "gflop_per_s": flops * median[v.label] / 1e9,
                    "gflop_per_iteration": flops / 1e9,
                    "peak_memory_mib": peak_memory_mib(
                        _memory_setup, f"{key}|{v.label}|{mode}", 3
                    ),
                })  # fmt: skip
    torch.set_num_threads(threads_before)
    return {
        "benchmark": "omniglot",
        "settings": {k: SETTINGS[k].__dict__ for k in settings},
        "gemm_gflop_per_s": gemm,
        "max_meta_gradient_difference": checks,
        "rows": rows,
        "machine": machine_info(),
    }


def format_omniglot(result: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_omniglot`'s result."""
    diffs = ", ".join(f"{m} {d:.1e}" for m, d in result["max_meta_gradient_difference"].items())
    gemm = result["gemm_gflop_per_s"]
    settings = "; ".join(
        f"{k}: meta-batch {s['meta_batch']}, {s['inner_steps']} inner step(s), α {s['inner_lr']}"
        for k, s in result["settings"].items()
    )
    lines = [
        f"Omniglot MAML meta-iteration (Conv-4, 64 filters, 1 query image per class, Adam); "
        f"{settings}",
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']}; float32 GEMM (1024²): "
        f"{gemm['1']:.0f} GFLOP/s on 1 thread, {gemm['2']:.0f} on 2",
        f"meta-gradients agree with the per-task loop to: {diffs}",
        "",
        "| setting | mode | variant | it/s | vs best loop | GFLOP/s | peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['setting']} | {r['mode']} | {r['variant']} | {r['it_per_s']:.2f} | "
            f"{r['speedup_vs_best_loop']:.2f}x | {r['gflop_per_s']:.1f} "
            f"({r['gflop_per_iteration']:.1f}/it) | {r['peak_memory_mib']:.0f} MiB |"
        )
    return "\n".join(lines)
