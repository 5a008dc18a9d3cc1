"""Config of the supervised experiments (sinusoid regression so far)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from metarl.config import CommonConfig, ConfigError, option
from metarl.core.adapt import META_GRADIENT_MODES


@dataclass
class SinusoidConfig(CommonConfig):
    """Sinusoid regression (Finn et al. 2017, Sec. 5.1). Defaults are the paper's protocol."""

    # --- tasks -------------------------------------------------------------------------------
    amplitude_range: list[float] = option([0.1, 5.0], "amplitude A ~ U[low, high]", low=0.0)
    phase_range: list[float] = option([0.0, math.pi], "phase φ ~ U[low, high] (radians)")
    input_range: list[float] = option([-5.0, 5.0], "inputs x ~ U[low, high]")
    k_shot: int = option(10, "support points per task (K) during meta-training", low=1)
    k_query: int = option(10, "query points per task during meta-training", low=1)
    # --- model -------------------------------------------------------------------------------
    hidden_sizes: list[int] = option([40, 40], "hidden layer widths of the MLP", low=1)
    activation: str = option("relu", "hidden activation", choices=("relu", "tanh"))
    # --- MAML --------------------------------------------------------------------------------
    iterations: int = option(70_000, "meta-training iterations", low=1)
    meta_batch_size: int = option(25, "tasks per meta-iteration", low=1)
    meta_lr: float = option(1e-3, "Adam learning rate of the outer loop", low=0.0)
    inner_lr: float = option(
        0.01, "inner step size α (the paper's 0.01; the original code defaulted to 0.001)", low=0.0
    )
    inner_steps: int = option(1, "inner gradient steps during meta-training", low=0)
    meta_gradient: str = option(
        "second_order", "how the meta-gradient crosses the inner loop", choices=META_GRADIENT_MODES
    )
    fd_epsilon: float = option(
        1e-3, "perturbation of the finite-difference Hessian product", low=0.0
    )
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_tasks: int = option(600, "fixed test tasks", low=1)
    eval_seed: int = option(20_170_301, "seed of the test tasks (independent of `seed`)", low=0)
    eval_shots: list[int] = option([5, 10, 20], "support sizes K evaluated", low=1)
    eval_steps: int = option(10, "gradient steps measured at test time", low=0)
    eval_query_points: int = option(100, "query points per test task (MSE is their mean)", low=1)
    eval_lr: float | None = option(None, "test-time step size; null: the same as inner_lr", low=0.0)
    # --- baselines (trained by metarl evaluate if missing) -----------------------------------
    baseline_iterations: int = option(
        70_000, "Adam iterations of the pretrained and oracle regressors", low=1
    )
    baseline_lr: float = option(1e-3, "Adam learning rate of the baseline regressors", low=0.0)
    pretrained_finetune_lrs: list[float] = option(
        [0.001, 0.003, 0.01, 0.03, 0.1],
        "step sizes tried when fine-tuning the pretrained model; the best on separate "
        "validation tasks is used (the paper tuned it automatically)",
        low=0.0,
    )

    def validate(self) -> None:
        super().validate()
        for name in ("amplitude_range", "phase_range", "input_range"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{name}: expected [low, high] with low <= high, got {pair}")
        if not self.pretrained_finetune_lrs:
            raise ConfigError("pretrained_finetune_lrs: give at least one step size")

    @property
    def test_lr(self) -> float:
        """The test-time step size (``eval_lr``, else ``inner_lr``)."""
        return self.inner_lr if self.eval_lr is None else self.eval_lr
