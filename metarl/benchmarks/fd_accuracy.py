"""How accurate the finite-difference mode is: error against the exact derivative, by ε.

``meta_gradient=finite_difference`` replaces the Hessian-vector products of MAML's
meta-gradient by central differences of gradients, ``Hv ≈ [∇L(θ+εv) − ∇L(θ−εv)] / 2ε`` with
``ε = fd_epsilon / ‖v‖``; ``fisher_product=finite_difference`` does the same for TRPO's Fisher
products. Both are O(ε²) accurate where the loss is smooth. Two things break that:

* float32 round-off, which grows as ~1e-7/ε (small ε);
* ReLU kinks: when a sample's pre-activation lies within ε·|d pre-activation / dθ · v| of zero,
  the two gradients sit on different linear pieces and their difference divided by 2ε is a
  spike that no Hessian has. Autograd's exact product treats ReLU'' as 0, the derivative that
  holds almost everywhere, so it is the reference here.

This module measures the relative error ``‖g_fd − g_exact‖ / ‖g_exact‖`` on the sinusoid
meta-gradient (1-40-40-1 MLP, K = 10, 25 tasks) and on 2D navigation's Fisher-vector product
(100-100 policy), for ReLU and tanh, at initialisation and after a little training, over a grid
of ε. ``python -m metarl.benchmarks.fd_accuracy`` prints the tables (docs/numerics.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metarl.algorithms import Problem
from metarl.algorithms.maml import MAML
from metarl.core import InnerStepSize
from metarl.loop import adam
from metarl.rl.trpo import flatten
from metarl.seeding import seeded
from metarl.supervised.models import sinusoid_mlp
from metarl.supervised.sinusoid import SinusoidTasks
from metarl.supervised.tasks import mse_per_task

EPSILONS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def sinusoid_errors(
    activation: str, epsilons: Sequence[float], batches: int = 40, trained: int = 0
) -> dict[float, list[float]]:
    """Relative error of the finite-difference meta-gradient per meta-batch, by ε.

    Args:
        activation: ``relu`` or ``tanh``.
        epsilons: the ``fd_epsilon`` values.
        batches: meta-batches measured.
        trained: second-order meta-training iterations first (0: at initialisation).
    """
    with seeded(0):
        model = sinusoid_mlp([40, 40], activation)
    tasks, problem = SinusoidTasks(), Problem(mse_per_task)
    gen = torch.Generator().manual_seed(1)
    exact = MAML(InnerStepSize(0.01))
    optimizer = adam(model.parameters(), 1e-3)
    for iteration in range(trained):
        batch = tasks.sample(25, 10, 10, gen)[0]
        optimizer.zero_grad()
        exact.meta_loss(model, batch, problem, iteration).loss.backward()
        optimizer.step()
    params = list(model.parameters())

    def meta_gradient(algorithm: MAML, batch: Any) -> torch.Tensor:
        loss = algorithm.meta_loss(model, batch, problem, 0).loss
        return flatten(torch.autograd.grad(loss, params))

    errors: dict[float, list[float]] = {eps: [] for eps in epsilons}
    for _ in range(batches):
        batch = tasks.sample(25, 10, 10, gen)[0]
        reference = meta_gradient(exact, batch)
        for eps in epsilons:
            fd = MAML(InnerStepSize(0.01), mode="finite_difference", fd_epsilon=eps)
            errors[eps].append(_relative(meta_gradient(fd, batch), reference))
    return errors


def navigation_errors(
    activation: str, epsilons: Sequence[float], directions: int = 8, trained: int = 0
) -> dict[float, list[float]]:
    """Relative error of the finite-difference Fisher-vector product per direction, by ε.

    One meta-batch of 2D navigation (10 tasks × 10 episodes), at initialisation or after
    ``trained`` MAML-TRPO iterations; random directions ``v``.
    """
    from metarl.experiments import load_config
    from metarl.rl.fisher import finite_difference_fvp, fisher_vector_product
    from metarl.rl.maml import kl_gradient, meta_objective
    from metarl.rl.maml_trpo import meta_update, sample_meta_batch
    from metarl.rl.policy import build_policy, detach_distribution
    from metarl.rl.task_envs import make_batched_env

    config = load_config(
        "navigation", ["meta_batch_size=10", "episodes_per_task=10", f"activation={activation}"]
    )
    policy = build_policy(config)
    theta = dict(policy.named_parameters())
    env = make_batched_env(config.env, 100, config.horizon)
    task_rng, noise = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def batch() -> tuple[Any, Any]:
        tasks = env.sample_tasks(10, task_rng)
        env.seed(0)
        return sample_meta_batch(env, tasks, 10, policy, theta, config, noise)

    for iteration in range(trained):
        meta_update(policy, theta, *batch(), config, iteration)
    support, query = batch()
    objective = meta_objective(policy, theta, support, query, config.inner_lr)
    exact = fisher_vector_product(objective.kls.mean(), list(theta.values()))
    old = detach_distribution(objective.query_policy)
    gradient = kl_gradient(policy, theta, support, query, config.inner_lr, old)
    theta0 = flatten(p.detach() for p in theta.values())
    gen = torch.Generator().manual_seed(2)
    vectors = [torch.randn(theta0.shape, generator=gen) for _ in range(directions)]
    references = [exact(v) for v in vectors]
    errors: dict[float, list[float]] = {eps: [] for eps in epsilons}
    for eps in epsilons:
        fd = finite_difference_fvp(gradient, theta0, epsilon=eps)
        errors[eps] = [_relative(fd(v), ref) for v, ref in zip(vectors, references)]
    return errors


def summary(errors: dict[float, list[float]]) -> list[str]:
    """Markdown rows: ε, median, 90th percentile, largest, share of samples above 1e-2."""
    rows = []
    for eps, values in errors.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        above = sum(v > 1e-2 for v in values) / len(values)
        rows.append(f"| {eps:g} | {statistics.median(values):.1e} | {p90:.1e} | "
                    f"{ordered[-1]:.1e} | {above:.0%} |")  # fmt: skip
    return rows


def main() -> None:
    """Print the tables of docs/numerics.md."""
    torch.set_num_threads(1)
    header = ["| ε | median | 90th percentile | largest | share > 1e-2 |", "|---|---|---|---|---|"]
    for name, measure, steps in (
        ("sinusoid meta-gradient", sinusoid_errors, (0, 2000)),
        ("navigation Fisher-vector product", navigation_errors, (0, 5)),
    ):
        for activation in ("relu", "tanh"):
            for trained in steps:
                when = "at initialisation" if trained == 0 else f"after {trained} iterations"
                print(f"\n**{name}, {activation}, {when}**\n")
                print("\n".join(header + summary(measure(activation, EPSILONS, trained=trained))))


if __name__ == "__main__":
    main()
