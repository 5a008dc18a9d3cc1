"""Sinusoid regression: model, meta-training set-up, and the regression baselines.

The baselines follow the paper (Sec. 5.1): **pretrained** is the same network trained by
ordinary regression on tasks drawn from the whole distribution, then fine-tuned at test time
like MAML; **oracle** receives the amplitude and phase as extra inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from metarl.core import InnerStepSize
from metarl.core.layers import MLP
from metarl.run import adam
from metarl.supervised.config import SinusoidConfig
from metarl.supervised.models import sinusoid_mlp
from metarl.supervised.sinusoid import SinusoidTasks, oracle_inputs
from metarl.supervised.tasks import TaskBatch, mse_per_task
from metarl.supervised.trainer import MetaTrainSetup, meta_train


def task_distribution(config: SinusoidConfig) -> SinusoidTasks:
    """The config's distribution over sinusoids."""
    return SinusoidTasks(
        tuple(config.amplitude_range), tuple(config.phase_range), tuple(config.input_range)
    )


def build_model(config: SinusoidConfig) -> MLP:
    """The regressor the config describes (seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    return sinusoid_mlp(config.hidden_sizes, config.activation)


def train(
    config: SinusoidConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None,
    progress: bool = True,
) -> nn.Module:
    """Meta-train the sinusoid regressor with MAML into ``run_dir``."""
    tasks = task_distribution(config)

    def sample_batch(gen: torch.Generator) -> TaskBatch:
        return tasks.sample(config.meta_batch_size, config.k_shot, config.k_query, gen)[0]

    setup = MetaTrainSetup(
        model=build_model(config),
        step_size=InnerStepSize(config.inner_lr),
        sample_batch=sample_batch,
        task_losses=mse_per_task,
    )
    return meta_train(config, setup, run_dir, resume_state, progress)


def train_regressor(
    config: SinusoidConfig, oracle: bool, progress: bool = True, desc: str = ""
) -> MLP:
    """Ordinary regression on pooled tasks (no meta-learning): the pretrained or oracle baseline.

    Each Adam step uses ``meta_batch_size`` fresh tasks with ``k_shot + k_query`` points each, so
    the baseline sees as much data per step as MAML does.
    """
    device = torch.device(config.device)
    torch.manual_seed(config.seed + (2 if oracle else 1))
    model = sinusoid_mlp(config.hidden_sizes, config.activation, inputs=3 if oracle else 1)
    model.to(device)
    gen = torch.Generator().manual_seed(config.seed + (2 if oracle else 1))
    tasks = task_distribution(config)
    optimizer = adam(model.parameters(), config.baseline_lr)
    n_points = config.k_shot + config.k_query
    for _ in tqdm(range(config.baseline_iterations), desc=desc, disable=not progress, unit="it"):
        params = tasks.sample_params(config.meta_batch_size, gen)
        x = tasks.sample_inputs(config.meta_batch_size, n_points, gen)
        y = tasks.targets(params, x)
        inputs = oracle_inputs(x, params) if oracle else x
        loss = mse_per_task(model(inputs.to(device)), y.to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model
