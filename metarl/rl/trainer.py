"""MAML-TRPO meta-training (Finn et al. 2017, Alg. 3 with the TRPO meta-update of App. A.2).

:func:`train` reads top to bottom, one meta-iteration per loop pass:
sample tasks → :func:`sample_meta_batch` (episodes with θ, inner REINFORCE step(s) on fresh
episodes per step, query episodes with θ') → :func:`natural_step` (surrogate loss and KL at
θ'(θ), natural gradient by conjugate gradient on Fisher-vector products, trust-region step) →
backtracking line search → log → checkpoint.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent

from metarl.config import to_dict
from metarl.core import expand_to_tasks, get_params, inner_step
from metarl.core.functional import Params
from metarl.envs import BatchedTaskEnv
from metarl.rl.baseline import LinearFeatureBaseline
from metarl.rl.config import RLConfig
from metarl.rl.conjugate_gradient import conjugate_gradient
from metarl.rl.episodes import Episodes, with_advantages
from metarl.rl.maml import (
    gauss_newton_fvp,
    inner_loss,
    kl_gradient,
    meta_objective,
    objective_values,
)
from metarl.rl.policy import GaussianMLPPolicy, detach_distribution
from metarl.rl.sampler import sample_episodes
from metarl.rl.task_envs import make_batched_env
from metarl.rl.trpo import (
    finite_difference_fvp,
    fisher_vector_product,
    flatten,
    line_search,
    trust_region_step,
    unflatten,
)
from metarl.run import CHECKPOINT, MetricsLog, atomic_torch_save, iteration_bar, setup_cpu


def build_policy(config: RLConfig) -> GaussianMLPPolicy:
    """The untrained policy the config describes (its initialisation is seeded by ``seed``)."""
    env = make_batched_env(config.env, 1, config.horizon)
    torch.manual_seed(config.seed)
    return GaussianMLPPolicy(
        env.observation_dim,
        env.action_dim,
        config.hidden_sizes,
        config.activation,
        config.init_std,
        config.min_std,
    )


def sample_meta_batch(
    env: BatchedTaskEnv,
    tasks: list[dict[str, Any]],
    n_episodes: int,
    policy: GaussianMLPPolicy,
    theta: Params,
    config: RLConfig,
    baseline: LinearFeatureBaseline,
    generator: torch.Generator | None,
) -> tuple[list[Episodes], Episodes]:
    """One meta-iteration's episodes, with advantages: the support episodes of every inner step
    (the first with θ, each later one with the previous step's parameters) and the query
    episodes with the adapted θ'. ``n_episodes`` per task; ``env`` holds ``len(tasks) ×
    n_episodes`` environments, already seeded.

    The inner steps here only produce θ' to sample with (no graph): :func:`natural_step`
    recomputes the same θ' as a differentiable function of θ.
    """

    def sample(params: Params) -> Episodes:
        episodes = sample_episodes(env, tasks, n_episodes, policy, params, generator)
        return with_advantages(
            episodes, baseline, config.gamma, config.gae_lambda, config.normalize_advantages
        )

    params = expand_to_tasks({n: p.detach() for n, p in theta.items()}, len(tasks))
    support: list[Episodes] = []
    for k in range(config.inner_steps):
        support.append(sample(params))
        params = inner_step(
            inner_loss(policy, support[-1]), params, config.inner_lr, k, "first_order"
        )
    return support, sample(params)


class NaturalStep(NamedTuple):
    """One meta-iteration's TRPO step, before its line search.

    Attributes:
        full_step: flat ``s (n,)``, scaled so that ``½ sᵀ(F + λI)s = max_kl``; the line search
            tries ``θ − β^k s``. NaN where the loss or its gradient is not finite.
        grad: flat ``g = ∇_θ`` of the mean post-adaptation surrogate loss ``(n,)``.
        loss_before: that loss at θ.
        old_policy: ``π_θ'`` on the query observations at this θ, detached (the KL's reference).
    """

    full_step: Tensor
    grad: Tensor
    loss_before: float
    old_policy: Independent


def natural_step(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    config: RLConfig,
) -> NaturalStep:
    """The natural-gradient step of MAML-TRPO (Finn et al. 2017, App. A.2) at θ.

    Surrogate loss at θ'(θ) and its gradient ``g``; the Fisher-vector product through the
    adaptation (``config.fisher_product``, on every ``fisher_subsample``-th episode); ``F⁻¹g``
    by conjugate gradient; scaled to the trust region ``max_kl``.
    """
    # --- outer loss: surrogate at θ'(θ), averaged over tasks, and its gradient -------------
    objective = meta_objective(
        policy, theta, support, query, config.inner_lr,
        mode=config.meta_gradient, fd_epsilon=config.fd_epsilon,
    )  # fmt: skip
    loss = objective.losses.mean()
    loss_before = float(loss.detach())
    old_policy = detach_distribution(objective.query_policy)
    theta_old = flatten(p.detach() for p in theta.values())
    every = config.fisher_subsample
    # Only the double backward of the full batch's KL differentiates this graph again.
    reuse_graph = config.fisher_product == "double_backward" and every == 1
    if math.isfinite(loss_before):
        grad = flatten(torch.autograd.grad(loss, list(theta.values()), retain_graph=reuse_graph))
    else:  # nothing to solve: the line search rejects a NaN step
        grad = torch.full_like(theta_old, math.nan)

    # --- Fisher-vector product: Hessian of the mean KL at θ, through the adaptation --------
    # On every k-th episode if fisher_subsample = k > 1 (then with that subset's own KL).
    fisher_support = [episodes.every_kth_episode(every) for episodes in support]
    fisher_query = query.every_kth_episode(every)
    if config.fisher_product == "gauss_newton":
        fvp = gauss_newton_fvp(
            policy, theta, fisher_support, fisher_query, config.inner_lr,
            config.cg_damping, config.meta_gradient,
        )  # fmt: skip
    else:
        fisher = objective if every == 1 else meta_objective(
            policy, theta, fisher_support, fisher_query, config.inner_lr,
            mode=config.meta_gradient, fd_epsilon=config.fd_epsilon,
        )  # fmt: skip
        if config.fisher_product == "double_backward":
            fvp = fisher_vector_product(fisher.kls.mean(), list(theta.values()), config.cg_damping)
        else:
            fisher_kl_gradient = kl_gradient(
                policy, theta, fisher_support, fisher_query, config.inner_lr,
                detach_distribution(fisher.query_policy), config.meta_gradient,
                config.fd_epsilon,
            )  # fmt: skip
            fvp = finite_difference_fvp(
                fisher_kl_gradient, theta_old, config.cg_damping, config.fd_epsilon
            )

    # --- natural gradient by conjugate gradient, scaled to the trust region ---------------
    if bool(torch.isfinite(grad).all()):
        direction = conjugate_gradient(fvp, grad, config.cg_iterations)
        full_step = trust_region_step(direction, fvp, config.max_kl)
    else:
        full_step = grad
    return NaturalStep(full_step, grad, loss_before, old_policy)


def train(
    config: RLConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
) -> GaussianMLPPolicy:
    """Meta-train a policy with MAML-TRPO for ``config.iterations`` iterations into ``run_dir``.

    With ``resume_state`` (a checkpoint of this experiment) the run continues exactly where it
    stopped: policy, task generator, action-noise generator and torch RNG are restored, so the
    result equals an uninterrupted run.

    Every iteration adds its values to ``metrics.jsonl`` (window means over ``log_every``):
    ``returns/pre_adaptation`` and ``returns/post_adaptation`` (mean undiscounted episode return
    with θ and with θ'), ``meta/surrogate_before``/``meta/surrogate_after`` (loss at θ and at the
    accepted θ), ``meta/kl``, ``meta/line_search_steps``, ``meta/accepted``,
    ``time/sampling``/``time/update`` (seconds), ``time/elapsed`` (wall seconds since the run
    started, across resumes) and ``sampling/env_steps`` (cumulative).

    The checkpoint also keeps the best model so far, for the paper's evaluation protocol
    (``eval_model: best``): ``best = {"iteration", "return", "model"}``, the parameters that
    sampled the highest ``returns/post_adaptation`` of a single iteration, as they were before
    that iteration's update (so ``iteration`` updates had been applied).
    """
    setup_cpu(config.num_threads)
    if config.device != "cpu":
        warnings.warn("meta-RL runs on the CPU: the environments are numpy", stacklevel=2)
    n_tasks, n_episodes = config.meta_batch_size, config.episodes_per_task
    env = make_batched_env(config.env, n_tasks * n_episodes, config.horizon)
    policy = build_policy(config)
    baseline = LinearFeatureBaseline(config.baseline_reg)
    task_rng = np.random.default_rng(config.seed)
    action_noise = torch.Generator().manual_seed(config.seed)
    start, elapsed_before, env_steps = 0, 0.0, 0
    best: dict[str, Any] | None = None
    if resume_state is not None:
        policy.load_state_dict(resume_state["model"])
        task_rng.bit_generator.state = resume_state["task_rng"]
        action_noise.set_state(resume_state["action_noise"])
        torch.set_rng_state(resume_state["torch_rng"])
        start = resume_state["iteration"]
        elapsed_before = resume_state["elapsed"]
        env_steps = resume_state["env_steps"]
        best = resume_state.get("best")  # None in checkpoints written before it was recorded
    theta: Params = get_params(policy)  # the policy's own leaves: accepted steps update them

    def checkpoint(iteration: int, elapsed: float) -> None:
        state = {
            "config": to_dict(config),
            "iteration": iteration,
            "model": policy.state_dict(),
            "task_rng": task_rng.bit_generator.state,
            "action_noise": action_noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            "elapsed": elapsed,
            "env_steps": env_steps,
            "best": best,
        }
        atomic_torch_save(state, run_dir / CHECKPOINT)

    log = MetricsLog(run_dir, config.tensorboard, resume_iteration=start if resume_state else None)
    window: dict[str, float] = {}
    bar = iteration_bar(config, start, progress)
    started = time.perf_counter()
    try:
        for iteration in bar:
            tick = time.perf_counter()
            # --- sample a meta-batch of tasks ----------------------------------------------------
            tasks = env.sample_tasks(n_tasks, task_rng)
            env.seed([config.seed, iteration])  # reset noise: the same after a resume

            # --- episodes with θ, inner REINFORCE step(s), query episodes with θ' -------------
            support, query = sample_meta_batch(
                env, tasks, n_episodes, policy, theta, config, baseline, action_noise
            )
            sampled = time.perf_counter()
            post_return = float(query.task_returns().mean())
            if math.isfinite(post_return) and (best is None or post_return > best["return"]):
                # θ as it sampled this return, before this iteration's update changes it
                model = {name: t.detach().clone() for name, t in policy.state_dict().items()}
                best = {"iteration": iteration, "return": post_return, "model": model}

            # --- the natural-gradient step: surrogate loss, its gradient, Fisher products, CG ---
            step = natural_step(policy, theta, support, query, config)

            # --- backtracking line search; θ changes only if a candidate is accepted -----------
            evaluate = objective_values(
                policy, theta, support, query, config.inner_lr, step.old_policy
            )
            theta_old = flatten(p.detach() for p in theta.values())
            result = line_search(
                evaluate, theta_old, step.full_step, step.loss_before, config.max_kl,
                config.line_search_ratio, config.line_search_steps,
            )  # fmt: skip
            if result.accepted:
                with torch.no_grad():
                    for p, new in zip(theta.values(), unflatten(result.params, theta).values()):
                        p.copy_(new)
            elif not math.isfinite(result.loss_before):
                warnings.warn(
                    f"iteration {iteration}: the surrogate loss is {result.loss_before}; the "
                    "meta-update was rejected and θ kept",
                    RuntimeWarning,
                    stacklevel=2,
                )
            updated = time.perf_counter()

            # --- log and checkpoint -------------------------------------------------------------
            env_steps += int(sum(int(e.masks.sum()) for e in (*support, query)))
            values = {
                "returns/pre_adaptation": float(support[0].task_returns().mean()),
                "returns/post_adaptation": post_return,
                "meta/surrogate_before": result.loss_before,
                "meta/surrogate_after": result.loss_after,
                "meta/kl": result.kl,
                "meta/line_search_steps": float(result.steps),
                "meta/accepted": float(result.accepted),
                "time/sampling": sampled - tick,
                "time/update": updated - sampled,
            }
            for key, value in values.items():
                window[key] = window.get(key, 0.0) + value
            done = iteration + 1
            elapsed = elapsed_before + (updated - started)
            if done % config.log_every == 0 or done == config.iterations:
                n = config.log_every if done % config.log_every == 0 else done % config.log_every
                means = {key: value / n for key, value in window.items()}
                means["time/elapsed"] = elapsed
                means["sampling/env_steps"] = float(env_steps)
                log.write(done, means)
                bar.set_postfix(
                    before=f"{means['returns/pre_adaptation']:.1f}",
                    after=f"{means['returns/post_adaptation']:.1f}",
                )
                window = {}
            if done % config.checkpoint_every == 0 or done == config.iterations:
                checkpoint(done, elapsed)
    finally:
        # An interruption keeps the last periodic checkpoint as it is: a resume from it replays
        # the same tasks and noise and gives the same numbers as an uninterrupted run.
        bar.close()
        log.close()
    return policy
