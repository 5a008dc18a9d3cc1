"""Config of the meta-RL experiments (MAML with a policy-gradient inner loop and TRPO outer loop).

Defaults are the 2D-navigation protocol of Finn et al. (2017, Sec. 5.3 and App. A.2) and the
pytorch-maml-rl reference config ``configs/maml/2d-navigation.yaml`` (fast-lr 0.1, fast-batch-size
20, meta-batch-size 20, one inner step, max-kl 0.01, 10 CG iterations, CG damping 1e-5, line
search 15 steps with ratio 0.8, γ 0.99, GAE λ 1.0, 500 meta-iterations). The paper's policy has
two hidden layers of 100 ReLU units; the PyTorch reference uses 64-64 tanh
(``--set hidden_sizes=[64,64] activation=tanh``).

The locomotion tasks reuse this class: they differ in ``env``, ``horizon`` and the batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metarl.config import ConfigError, MetaLearningConfig, option, override
from metarl.rl.task_envs import ENVIRONMENTS, environment_names
from metarl.rl.trpo import LINE_SEARCH_RULES

FISHER_PRODUCTS: tuple[str, ...] = ("gauss_newton", "double_backward", "finite_difference")
RL_ALGORITHMS: tuple[str, ...] = ("maml_trpo",)
"""Meta-RL outer objectives (``algorithm``); a clipped PPO/ProMP objective would join here as a
sibling of :mod:`metarl.rl.maml_trpo`."""


@dataclass
class RLConfig(MetaLearningConfig):
    """MAML-TRPO meta-reinforcement learning. Defaults: 2D navigation as in the paper."""

    RENAMED: ClassVar[dict[str, str]] = {
        "eval_step_sizes": "eval_lr",
        "eval_episodes": "eval_episodes_per_task",
    }

    experiment: str = override("navigation")
    log_every: int = override(1)
    checkpoint_every: int = override(10)
    # --- environment -------------------------------------------------------------------------
    env: str = option(
        "navigation2d",
        f"task environment: {', '.join(ENVIRONMENTS)}, or one added with "
        "metarl.rl.task_envs.register_batched_env",
        listed=environment_names,
    )
    horizon: int = option(
        100,
        "steps per episode before truncation (paper: 100 for navigation)",
        low=1,
        high=10_000,
    )
    # --- policy ------------------------------------------------------------------------------
    hidden_sizes: list[int] = option(
        [100, 100], "hidden widths of the Gaussian MLP policy (paper: 100-100)", low=1
    )
    activation: str = option(
        "relu", "hidden activation (paper: relu; PyTorch reference: tanh)", choices=("relu", "tanh")
    )
    init_std: float = option(1.0, "initial standard deviation of the Gaussian policy", low=1e-6)
    min_std: float = option(1e-6, "floor on the policy's standard deviation", low=0.0)
    # --- meta-training -----------------------------------------------------------------------
    algorithm: str = option(
        "maml_trpo", "meta-RL algorithm (its outer objective)", choices=RL_ALGORITHMS
    )
    iterations: int = override(500)
    meta_batch_size: int = override(20)
    episodes_per_task: int = option(
        20, "episodes sampled per task for each inner step and for the query (K)", low=1
    )
    inner_lr: float = override(0.1)
    inner_steps: int = override(1)
    # --- returns and advantages --------------------------------------------------------------
    gamma: float = option(0.99, "discount factor γ", low=0.0, high=1.0)
    gae_lambda: float = option(
        1.0, "GAE λ (1: Monte-Carlo returns minus the baseline)", low=0.0, high=1.0
    )
    normalize_advantages: bool = option(True, "standardise each task's advantages")
    baseline_reg: float = option(1e-5, "first ridge coefficient of the linear baseline", low=1e-12)
    # --- TRPO meta-update --------------------------------------------------------------------
    max_kl: float = option(0.01, "trust region: largest mean KL(old || new) of a step", low=0.0)
    cg_iterations: int = option(10, "conjugate-gradient iterations", low=1)
    cg_damping: float = option(
        1e-5, "damping λ added to the Fisher-vector product (F + λI)", low=0.0
    )
    fisher_product: str = option(
        "double_backward",
        "Fisher-vector product through the adaptation: exact by double backward of the KL (the "
        "default), the same matrix in Gauss-Newton form Jᵀ M J by hand-written R-operator "
        "products on kept activations (HalfCheetah's whole TRPO update is 1.5x faster; a little "
        "more float32 round-off), or central differences of KL gradients (the paper's)",
        choices=FISHER_PRODUCTS,
    )
    fisher_subsample: int = option(
        1,
        "Fisher-vector products use every k-th episode of each task, of the support (the "
        "adaptation is redone on them) and of the query: that subset's own meta-KL; the "
        "gradient and the line search always use all of them (the paper: 1, all episodes; k > 1 "
        "is the fast option; OpenAI baselines' TRPO subsamples every 5th sample of its KL)",
        low=1,
    )
    line_search_ratio: float = option(
        0.8, "backtracking factor of the line search", low=0.0, high=1.0
    )
    line_search_steps: int = option(15, "step sizes tried by the line search", low=1)
    line_search_rule: str = option(
        "backtrack",
        "how the line search shrinks a rejected step: backtrack = by line_search_ratio each time "
        "(TRPO, the paper); measured_kl = to the trust region's edge implied by the KL measured "
        "at the rejected step (KL ≈ c f²), where that is smaller",
        choices=LINE_SEARCH_RULES,
    )
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_tasks: int = override(40)
    eval_seed: int = override(20_170_302)
    eval_steps: int = override(3)
    eval_episodes_per_task: int = option(
        20, "episodes per task and gradient step at test time", low=1
    )
    eval_trajectory_goals: int = option(4, "goals drawn in plots/trajectories.png", low=0)
    eval_model: str = option(
        "best",
        "the trained policy that `metarl evaluate` tests: best = the one with the highest "
        "post-adaptation training return (the paper, App. A.2: 'the model with the best average "
        "return during training was used for evaluation'), last = the final iteration's",
        choices=("best", "last"),
    )
    baselines_dir: str | None = option(
        None,
        "where `metarl evaluate` looks for SB3 baselines; null: <runs>/baselines/<experiment> "
        "beside the run (for a zoo entry, the zoo's baselines/<experiment>)",
    )
    eval_lr_pretrained: float | list[float] | None = option(
        None,
        "test-time step sizes of the pretrained baseline, as eval_lr; null: MAML's. The paper's "
        "released scripts chose them per method (first step: Ant 0.2, HalfCheetah-vel 0.02)",
        low=0.0,
        high=100.0,
    )
    eval_lr_random_init: float | list[float] | None = option(
        None,
        "test-time step sizes of the random-init baseline, as eval_lr; null: MAML's (the "
        "paper's released Ant scripts: 1.0 for the first step)",
        low=0.0,
        high=100.0,
    )

    eval_reuse_baselines: bool = option(
        False,
        "score only the meta-learned policy and take the baselines' curves (random init, "
        "pretrained, oracles) from the run's eval.json when they were measured with the same "
        "settings, baseline files and torch: for repeated evaluations of one run",
    )

    def validate(self) -> None:
        super().validate()
        for key in ("eval_lr_pretrained", "eval_lr_random_init"):
            if getattr(self, key) == []:
                raise ConfigError(f"{key}: give at least one step size, or null")
        exact = ("gauss_newton", "double_backward")
        if self.meta_gradient == "finite_difference" and self.fisher_product in exact:
            # The finite-difference inner step has no second-order graph to differentiate.
            raise ConfigError(
                f"fisher_product: {self.fisher_product!r} cannot differentiate through "
                "meta_gradient='finite_difference'; use fisher_product=finite_difference"
            )
        if self.fisher_subsample > self.episodes_per_task:
            raise ConfigError(
                f"fisher_subsample: {self.fisher_subsample} is above episodes_per_task "
                f"({self.episodes_per_task}); no episode would be left"
            )
        if self.env not in environment_names():
            raise ConfigError(
                f"env: {self.env!r} is not one of {environment_names()} (a task environment of "
                "your own: register it with metarl.rl.task_envs.register_batched_env, and on "
                "the command line import that code first: metarl --import MODULE_OR_FILE ...)"
            )
        if self.inner_steps < 1:
            raise ConfigError("inner_steps: meta-RL needs at least one inner step")
        if self.device != "cpu":
            # The environments are numpy and the policy is small: the update stays on the CPU
            # rather than half of it moving to a GPU without a measured gain.
            raise ConfigError(f"device: meta-RL runs on the CPU; {self.device!r} is not supported")

    @property
    def test_step_sizes(self) -> list[float]:
        """Step size of each test-time step: ``eval_lr``, else α then α/2 (the paper)."""
        if self.eval_lr is None:
            return [self.inner_lr, self.inner_lr / 2]
        return list(self.eval_lr) if isinstance(self.eval_lr, list) else [self.eval_lr]

    def step_sizes_of(self, method: str) -> list[float]:
        """Test-time step sizes of an adapted method (``meta_learned``, ``pretrained``,
        ``random_init``): a baseline's own ``eval_lr_<method>`` when given, else MAML's
        :attr:`test_step_sizes`."""
        own = getattr(self, f"eval_lr_{method}", None)
        if own is None:
            return self.test_step_sizes
        return list(own) if isinstance(own, list) else [own]
