"""``memory-family``: peak memory and seconds of one Omniglot 5-way 1-shot meta-iteration as
the number of inner steps grows (1, 5, 10, 20), for MAML (second order), first-order MAML,
Reptile and iMAML — the comparison the iMAML paper makes (Rajeswaran et al. 2019, Fig. 2).

Second-order MAML keeps every inner step's graph for the backward pass, so its memory grows with
the steps; first-order MAML, Reptile and iMAML differentiate no inner step and stay flat (iMAML's
implicit gradient needs only the final adapted weights and Hessian-vector products there).

Each cell runs the experiment's own pieces (``omniglot-5w1s``'s config with ``algorithm`` and
``inner_steps`` set, its Conv-4, the algorithm, the trainer's :class:`MetaGradient` and Adam) in
a fresh process on one thread. Memory depends on shapes, not pixels, so the episodes are random
images of Omniglot's shape (meta-batch 32, 28×28, one support and one query image per class)
and the benchmark runs where the dataset is absent. Memory is the peak resident-set growth from
the built model through the iterations; time the median iteration after the first.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
from collections.abc import Callable
from typing import Any

import torch

from metarl.benchmarks.common import machine_info, measure_steps
from metarl.core import TaskBatch

ALGORITHMS: dict[str, dict[str, Any]] = {
    "MAML": {"algorithm": "maml", "meta_gradient": "second_order"},
    "first-order MAML": {"algorithm": "maml", "meta_gradient": "first_order"},
    "Reptile": {"algorithm": "reptile", "meta_optimizer": "sgd", "meta_lr": 1.0},
    "iMAML": {"algorithm": "imaml"},
}
STEPS = (1, 5, 10, 20)
EXPERIMENT = "omniglot-5w1s"


def _episodes(config: Any, n: int) -> list[TaskBatch]:
    gen = torch.Generator().manual_seed(0)
    size = (config.meta_batch_size, config.n_way * config.k_shot, 1, 28, 28)
    labels = torch.arange(config.n_way).repeat_interleave(config.k_shot)
    labels = labels.expand(config.meta_batch_size, -1).contiguous()
    return [
        TaskBatch(torch.rand(size, generator=gen), labels, torch.rand(size, generator=gen), labels)
        for _ in range(n)
    ]


def _setup(variant: str, iterations: int) -> tuple[Callable[[TaskBatch], None], list[TaskBatch]]:
    """The step of one meta-iteration of ``variant`` = ``"<algorithm name>|<inner steps>"``."""
    from metarl.algorithms import make_algorithm
    from metarl.experiments import load_config
    from metarl.loop import adam
    from metarl.supervised.classification_experiment import build_model, problem
    from metarl.supervised.meta_gradient import MetaGradient

    name, steps = variant.split("|")
    overrides = {**ALGORITHMS[name], "inner_steps": int(steps), "data_dir": "/nonexistent"}
    config = load_config(EXPERIMENT, overrides)
    model = build_model(config)
    algorithm = make_algorithm(config, model)
    params = [*model.parameters(), *algorithm.parameters()]
    optimizer = (
        adam(params, config.meta_lr)
        if config.meta_optimizer == "adam"
        else torch.optim.SGD(params, lr=config.meta_lr)
    )
    meta_gradient, scored = MetaGradient(params), problem(config)

    def step(batch: TaskBatch) -> None:
        meta_gradient(algorithm, model, batch, scored, 0)
        optimizer.step()

    return step, _episodes(config, iterations)


def _worker(variant: str, iterations: int, queue: Any) -> None:
    torch.set_num_threads(1)
    step, batches = _setup(variant, iterations)
    peak, seconds = measure_steps(step, batches)
    queue.put((peak, statistics.median(seconds[1:] or seconds)))


def measure(variant: str, iterations: int = 3) -> tuple[float, float]:
    """Peak memory growth (MiB) over the first ``iterations`` meta-iterations of a fresh
    process, from the model built to the last step (the first step's graph and the optimiser's
    state included), and the median seconds of the iterations after the first."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(variant, iterations, queue))
    proc.start()
    peak, seconds = queue.get(timeout=1800)
    proc.join()
    return float(peak), float(seconds)


def bench_family_memory(
    steps: tuple[int, ...] = STEPS, iterations: int = 3, progress: bool = True
) -> dict[str, Any]:
    """Peak memory (MiB) and median seconds per meta-iteration for every algorithm and number
    of inner steps, each in fresh processes."""
    rows = []
    for name in ALGORITHMS:
        for n in steps:
            peak, seconds = measure(f"{name}|{n}", iterations)
            rows.append(
                {
                    "algorithm": name,
                    "inner_steps": n,
                    "peak_memory_mib": peak,
                    "seconds_per_iteration": seconds,
                }
            )
            if progress:
                print(f"  {name}, {n} inner steps: {rows[-1]['peak_memory_mib']:.0f} MiB, "
                      f"{rows[-1]['seconds_per_iteration']:.2f} s", flush=True)  # fmt: skip
    return {
        "benchmark": "family-memory",
        "setting": "Omniglot 5-way 1-shot shapes, meta-batch 32, Conv-4 (64 filters), one thread",
        "steps": list(steps),
        "rows": rows,
        "machine": machine_info(),
    }


def format_family_memory(result: dict[str, Any]) -> str:
    """Markdown table: one row per algorithm, memory and time per number of inner steps."""
    steps = result["steps"]
    cell = {(r["algorithm"], r["inner_steps"]): r for r in result["rows"]}
    lines = [
        f"memory and time of one meta-iteration vs inner steps ({result['setting']})",
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']}",
        "",
        "| algorithm | " + " | ".join(f"{n} step{'s' if n > 1 else ''}" for n in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name in dict.fromkeys(r["algorithm"] for r in result["rows"]):
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{cell[(name, n)]['peak_memory_mib']:.0f} MiB, "
                f"{cell[(name, n)]['seconds_per_iteration']:.2f} s"
                for n in steps
            )
            + " |"
        )
    return "\n".join(lines)
