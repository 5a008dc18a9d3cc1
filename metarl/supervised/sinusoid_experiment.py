"""Sinusoid regression: model, meta-training, and the regression baselines.

The baselines follow the paper (Sec. 5.1): **pretrained** is the same network trained by
ordinary regression on tasks drawn from the whole distribution, then fine-tuned at test time
like MAML; **oracle** receives the amplitude and phase as extra inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.algorithms import Problem, make_algorithm
from metarl.core import TaskBatch
from metarl.core.layers import MLP
from metarl.loop import adam, progress_bar
from metarl.seeding import seeded
from metarl.supervised.config import SinusoidConfig
from metarl.supervised.models import sinusoid_mlp
from metarl.supervised.sinusoid import SinusoidTasks, oracle_inputs
from metarl.supervised.tasks import mse_per_task
from metarl.supervised.trainer import check_meta_batch_memory, meta_train

PROBLEM = Problem(mse_per_task)
"""Regression: the task loss is the mean squared error, and so is the reported score."""


def problem(config: SinusoidConfig) -> Problem:
    """:data:`PROBLEM`, whatever the config: every sinusoid is scored the same way."""
    return PROBLEM


def io_shapes(config: SinusoidConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One input ``x`` and its target ``y``: ``(1,)`` and ``(1,)``."""
    return (1,), (1,)


def task_distribution(config: SinusoidConfig) -> SinusoidTasks:
    """The config's distribution over sinusoids."""
    return SinusoidTasks(
        tuple(config.amplitude_range), tuple(config.phase_range), tuple(config.input_range)
    )


def build_model(config: SinusoidConfig) -> MLP:
    """The regressor the config describes, its initial weights drawn from ``config.seed``."""
    with seeded(config.seed):
        return sinusoid_mlp(config.hidden_sizes, config.activation, init=config.init)


def preflight(config: SinusoidConfig) -> None:
    """Checks before a run directory is created: one meta-batch's memory."""
    model = build_model(config)
    check_meta_batch_memory(
        config, model, torch.zeros(config.k_shot, 1), torch.zeros(config.k_query, 1)
    )


def train(
    config: SinusoidConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    progress: bool = True,
    stop_at: float | None = None,
) -> nn.Module:
    """Meta-train the sinusoid regressor with the config's algorithm into ``run_dir`` (until
    ``stop_at``, a ``time.time()``, if given: :func:`~metarl.supervised.trainer.meta_train`)."""
    tasks = task_distribution(config)

    def sample_batch(gen: torch.Generator) -> TaskBatch:
        return tasks.sample(config.meta_batch_size, config.k_shot, config.k_query, gen)[0]

    model = build_model(config)
    algorithm = make_algorithm(config, model)
    return meta_train(
        config, model, algorithm, PROBLEM, sample_batch, run_dir, resume_state, progress,
        stop_at=stop_at,
    )  # fmt: skip


def train_regressor(
    config: SinusoidConfig, oracle: bool, progress: bool = True, desc: str = ""
) -> MLP:
    """Ordinary regression on pooled tasks (no meta-learning): the pretrained or oracle baseline.

    Each Adam step uses ``meta_batch_size`` fresh tasks with ``k_shot + k_query`` points each, so
    the baseline sees as much data per step as MAML does.
    """
    device = torch.device(config.device)
    seed = config.seed + (2 if oracle else 1)
    with seeded(seed):
        model = sinusoid_mlp(
            config.hidden_sizes, config.activation, inputs=3 if oracle else 1, init=config.init
        )
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    tasks = task_distribution(config)
    optimizer = adam(model.parameters(), config.baseline_lr)
    n_points = config.k_shot + config.k_query
    iterations = range(config.baseline_iterations)
    bar = progress_bar(iterations, desc=desc, disable=not progress, unit="it")
    for _ in bar:
        params = tasks.sample_params(config.meta_batch_size, gen)
        x = tasks.sample_inputs(config.meta_batch_size, n_points, gen)
        y = tasks.targets(params, x)
        inputs = oracle_inputs(x, params) if oracle else x
        loss = mse_per_task(model(inputs.to(device)), y.to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model
