"""Configs of the supervised experiments: what every meta-learning one shares, sinusoid
regression, and the standard-training reference. Few-shot classification's is in
:mod:`metarl.supervised.classification_config`.

The meta-learning ones extend :class:`~metarl.config.MetaLearningConfig` (the knobs every
experiment shares) with the outer optimiser, the algorithm, their tasks and their model;
defaults are the MAML paper's protocols (Finn et al. 2017, Sec. 5.1 and 5.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from metarl.algorithms import ALGORITHMS, OWN_SETTINGS_BY_ALGORITHM
from metarl.algorithms.maml import LEARNABLE_STEP_SIZES
from metarl.config import CommonConfig, ConfigError, MetaLearningConfig, option, override
from metarl.supervised.models import BN_MLP_HIDDEN, INITS


@dataclass
class SupervisedConfig(MetaLearningConfig):
    """What every supervised experiment adds: the algorithm and its outer optimiser."""

    # A checkpoint written before a key existed was trained without it: MAML++ runs from
    # before BNWB have no per-step BatchNorm tensors to load.
    ADDED: ClassVar[dict[str, Any]] = {"bn_per_step_weights": False}

    algorithm: str = option(
        "maml",
        "meta-learning algorithm: maml, anil, meta_sgd, maml_plus_plus, proto_maml, leopard, "
        "reptile, imaml (docs/algorithms.md)",
        choices=tuple(ALGORITHMS),
    )
    meta_lr: float = option(1e-3, "learning rate of the outer loop", low=0.0, high=10.0)
    meta_optimizer: str = option(
        "adam",
        "outer optimiser: adam (the paper's), or sgd (Reptile's interpolation)",
        choices=("adam", "sgd"),
    )
    meta_lr_schedule: str = option(
        "constant",
        "meta_lr over training: constant (the paper), cosine (MAML++) or linear (Reptile), "
        "the last two down to meta_lr_min",
        choices=("constant", "cosine", "linear"),
    )
    meta_lr_min: float = option(0.0, "meta_lr at the end of a cosine or linear schedule", low=0.0)
    step_size_lr: float = option(
        0.0,
        "outer learning rate of meta-learned inner step sizes (meta_sgd, maml_plus_plus, "
        "learn_inner_lr); 0: meta_lr, as the papers. Follows meta_lr_schedule. Smaller keeps "
        "Adam's steps (about step_size_lr each) small next to a small α (sinusoid's 0.01)",
        low=0.0,
    )
    chunk_tasks: int = option(
        0,
        "tasks per chunk: the meta-gradient is accumulated chunk by chunk, which bounds memory "
        "(0: the whole meta-batch in one pass, the default)",
        low=0,
    )
    chunk_workers: int = option(
        1,
        "chunks computed at once on threads of one torch thread each (with chunk_tasks > 0 and "
        "num_threads 1; 2 uses both cores of a 2-core machine: see `metarl bench --suite paper "
        "--only speed-omniglot`)",
        low=1,
    )
    time_budget: float = option(
        0.0,
        "seconds of training (summed over resumes; on the clock budget_clock names) after which "
        "the run ends, with a checkpoint, at the iteration it reached; 0: none (the paper's "
        "protocol is a number of iterations). For comparisons at equal time (metarl bench "
        "--only family-sinusoid); schedules "
        "still count toward `iterations`; a resumed run continues only under a larger budget",
        low=0.0,
    )
    budget_clock: str = option(
        "wall",
        "what time_budget counts: wall (seconds on the clock) or cpu (the training process's "
        "CPU seconds, all its threads): other load on a shared machine eats far less of a cpu "
        "budget (caches and memory bandwidth are still shared), and with num_threads 1 on an "
        "idle machine the two are equal",
        choices=("wall", "cpu"),
    )
    msl_iterations: int = option(
        5000,
        "maml_plus_plus: iterations over which the multi-step loss anneals toward the last step "
        "(0: off)",
        low=0,
    )
    doa_iterations: int = option(
        0, "maml_plus_plus: iterations of first-order meta-gradients before second order", low=0
    )
    bn_per_step_weights: bool = option(
        True,
        "maml_plus_plus: BNWB, one meta-learned BatchNorm scale and shift per inner step (the "
        "paper's; the inner loop does not adapt them); false: the model's own, adapted",
    )
    meta_sgd_init: list[float] = option(
        [0.005, 0.1],
        "meta_sgd: [low, high], each entry of α drawn uniformly from it (the paper's); []: every "
        "entry starts at inner_lr",
        low=0.0,
    )
    imaml_lambda: float = option(2.0, "imaml: λ of the proximal term λ/2‖φ − θ‖²", low=1e-6)
    imaml_cg_steps: int = option(
        5, "imaml: conjugate-gradient steps of the implicit meta-gradient", low=1
    )
    imaml_solver: str = option(
        "gd",
        "imaml: the inner solver: gd (inner_steps plain gradient steps, the paper's) or "
        "safeguarded (each task's step halved until its proximal loss decreases: no divergence "
        "where curvature exceeds 2/inner_lr)",
        choices=("gd", "safeguarded"),
    )
    reptile_inner_optimizer: str = option(
        "sgd",
        "reptile: the inner loop's optimiser: sgd (plain steps of inner_lr) or adam (β1 = 0, "
        "step inner_lr; the paper's few-shot experiments: Adam, β1 = 0, 0.001)",
        choices=("sgd", "adam"),
    )
    learn_inner_lr: str = option(
        "fixed",
        "the inner step size: fixed (α = inner_lr, the paper), or meta-learned with θ from "
        "inner_lr: global (one α), "
        "tensor (one per parameter tensor) or element (one per parameter, Meta-SGD's α)",
        choices=LEARNABLE_STEP_SIZES,
    )
    align_every: int = option(
        1000,
        "iterations between align/* metrics: cosines and inner products of the meta-batch's "
        "per-task support and query gradients at θ (a multiple of log_every; 0: never; "
        "proto_maml and leopard, whose heads come from the support set, and a meta-batch of "
        "one task log none)",
        low=0,
    )

    def validate(self) -> None:
        super().validate()
        if self.meta_sgd_init and (
            len(self.meta_sgd_init) != 2 or self.meta_sgd_init[0] > self.meta_sgd_init[1]
        ):
            raise ConfigError(f"meta_sgd_init: expected [low, high] with low <= high, or [], got "
                              f"{self.meta_sgd_init}")  # fmt: skip
        if self.align_every and self.align_every % self.log_every:
            raise ConfigError(
                f"align_every ({self.align_every}) must be a multiple of log_every "
                f"({self.log_every}): the alignment is logged with a window's means"
            )
        self._refuse_ignored_settings()
        if self.chunk_workers > 1 and (self.chunk_tasks == 0 or self.num_threads != 1):
            raise ConfigError(
                f"chunk_workers={self.chunk_workers} needs chunk_tasks > 0 (the chunks it runs at "
                f"once) and num_threads=1 (each worker is one thread), got chunk_tasks="
                f"{self.chunk_tasks}, num_threads={self.num_threads}; or chunk_workers=1"
            )

    def _refuse_ignored_settings(self) -> None:
        """Refuse a setting the chosen algorithm would ignore: the run would record it in
        config.yaml without it having any effect."""
        name, own = self.algorithm, OWN_SETTINGS_BY_ALGORITHM[self.algorithm]
        if own.meta_gradient is not None and self.meta_gradient != "second_order":
            raise ConfigError(
                f"meta_gradient={self.meta_gradient}: {name} computes its own meta-update "
                f"({own.meta_gradient}); leave meta_gradient at second_order"
            )
        if own.learn_inner_lr is not None and self.learn_inner_lr != "fixed":
            raise ConfigError(
                f"learn_inner_lr={self.learn_inner_lr}: {name} sets its inner step sizes itself "
                f"({own.learn_inner_lr}); leave learn_inner_lr at fixed"
            )
        if own.needs_inner_steps and self.inner_steps < 1:
            raise ConfigError(f"inner_steps={self.inner_steps}: {name} needs at least one inner "
                              "step")  # fmt: skip
        if self.meta_lr_schedule != "constant" and self.meta_lr_min > self.meta_lr:
            raise ConfigError(
                f"meta_lr_min={self.meta_lr_min} is above meta_lr={self.meta_lr}: a "
                f"{self.meta_lr_schedule} schedule would raise the learning rate"
            )


@dataclass
class SinusoidConfig(SupervisedConfig):
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
    init: str = option(
        "torch",
        "initial weights: torch (PyTorch's Kaiming-uniform) or paper (the MAML code's: normal "
        "σ 0.01 truncated at 2σ, zero biases)",
        choices=INITS,
    )
    # --- meta-training (the paper's values; the original code's inner step was 0.001) ---------
    iterations: int = override(70_000)
    meta_batch_size: int = override(25)
    inner_lr: float = override(0.01)
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_tasks: int = override(600)
    eval_shots: list[int] = option([5, 10, 20], "support sizes K evaluated", low=1)
    eval_steps: int = override(10)
    eval_query_points: int = option(100, "query points per test task (MSE is their mean)", low=1)
    # --- baselines (trained by metarl evaluate if missing) -----------------------------------
    baseline_iterations: int = option(
        70_000, "Adam iterations of the pretrained and oracle regressors", low=1
    )
    baseline_lr: float = option(
        1e-3, "Adam learning rate of the baseline regressors", low=0.0, high=1.0
    )
    pretrained_finetune_lrs: list[float] = option(
        [0.001, 0.003, 0.01, 0.03, 0.1],
        "step sizes tried when fine-tuning the pretrained model; the best on separate "
        "validation tasks is used (the paper tuned it automatically)",
        low=0.0,
    )

    def validate(self) -> None:
        super().validate()
        if self.algorithm in ("proto_maml", "leopard"):
            raise ConfigError(
                f"algorithm: {self.algorithm} builds a classifier's head from the support set's "
                "classes; the sinusoid is regression (any other algorithm fits)"
            )
        for name in ("amplitude_range", "phase_range", "input_range"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{name}: expected [low, high] with low <= high, got {pair}")
        if not self.pretrained_finetune_lrs:
            raise ConfigError("pretrained_finetune_lrs: give at least one step size")
        if not self.eval_shots:
            raise ConfigError("eval_shots: give at least one support size K")


@dataclass
class StandardConfig(CommonConfig):
    """Ordinary supervised training of the fully connected classifier, the reference that
    meta-learned features are compared with (``metarl analyze``).

    The feature-analysis study's protocol: 784-256-128-64-64-10 with BatchNorm then ReLU after
    each hidden layer, all of MNIST's 60,000 training images for 5 epochs in mini-batches of
    256, Adam (lr 1e-3, β 0.9/0.999), L2 regularisation 0.01; its reported test accuracy is
    96.71%. The study does not say how the L2 term enters: ``l2_style`` offers Keras's
    (``l2 · Σ‖W‖²`` added to the loss) and PyTorch's (Adam's ``weight_decay``).
    ``log_every`` and ``checkpoint_every`` count epochs.
    """

    BUDGET_UNIT: ClassVar[str] = "epochs"

    experiment: str = override("standard-mnist")
    log_every: int = override(1)
    checkpoint_every: int = override(1)
    # --- data --------------------------------------------------------------------------------
    dataset: str = option(
        "mnist",
        "mnist, fashion-mnist, or omniglot (the maml split's 1,100 training characters, drawers "
        "1-15 to train on and 16-20 to test; needs classes=train and network=conv4)",
        choices=("mnist", "fashion-mnist", "omniglot"),
    )
    data_dir: str | None = option(
        None, "data root holding <dataset>/; null: $METARL_DATA, else ../shared/data"
    )
    classes: str = option(
        "all",
        "all: the 10 labels (the reference); train: only train_classes, as a few-shot "
        "experiment's meta-training labels (features for the held-out labels stay unseen)",
        choices=("all", "train"),
    )
    train_classes: list[int] = option([0, 1, 2, 3, 4], "classes=train: the labels", low=0, high=9)
    # --- model and training ------------------------------------------------------------------
    network: str = option(
        "mlp",
        "mlp: the study's BatchNorm MLP (mlp_hidden); conv4: the MAML paper's Omniglot Conv-4 "
        "(64 filters, stride-2 3×3 convolutions, BatchNorm with running statistics)",
        choices=("mlp", "conv4"),
    )
    mlp_hidden: list[int] = option(list(BN_MLP_HIDDEN), "mlp: hidden widths", low=1)
    epochs: int = option(5, "passes over the training images", low=1)
    batch_size: int = option(256, "images per mini-batch", low=1)
    lr: float = option(1e-3, "Adam's learning rate (β 0.9/0.999)", low=0.0, high=10.0)
    l2: float = option(0.01, "L2 regularisation strength (how: l2_style)", low=0.0)
    l2_style: str = option(
        "loss",
        "loss: l2 · Σ‖W‖² over the Linear weights added to the loss (Keras's "
        "kernel_regularizer); adam: Adam's weight_decay=l2 on every parameter (PyTorch's idiom, "
        "the gradient gets l2 · θ)",
        choices=("loss", "adam"),
    )

    @property
    def iterations(self) -> int:
        """The budget as checkpoints count it: epochs."""
        return self.epochs

    @property
    def n_classes(self) -> int:
        """Outputs of the classifier."""
        if self.dataset == "omniglot":
            from metarl.supervised.data.omniglot import SPLIT_SIZES

            return SPLIT_SIZES["train"]
        return 10 if self.classes == "all" else len(self.train_classes)

    def validate(self) -> None:
        super().validate()
        if self.dataset == "omniglot" and (self.classes, self.network) != ("train", "conv4"):
            raise ConfigError(
                "dataset: omniglot trains Conv-4 on the training characters only; set "
                "classes=train network=conv4 (as standard-omniglot does)"
            )
        if len(set(self.train_classes)) != len(self.train_classes) or len(self.train_classes) < 2:
            raise ConfigError(f"train_classes: need two or more distinct labels, got "
                              f"{self.train_classes}")  # fmt: skip
