"""How well TRPO's local models describe the MAML objective along the natural step.

TRPO (Schulman et al. 2015) scales the natural-gradient step ``s`` so that the quadratic model
of the mean KL, ``½ sᵀFs``, equals ``max_kl``, and predicts the surrogate loss to change by
``−gᵀs``. For a smooth policy both models hold for small steps. With ReLU units the adapted
parameters ``θ' = θ − α∇L_support(θ)`` are not smooth in θ: each support sample's gradient jumps
where one of its units switches, autograd's Hessian (ReLU'' = 0) does not see the jumps, and
their sum over thousands of samples with signed advantages moves θ' by far more than ``F``
predicts at small steps. :func:`profile_natural_step` measures both models against the values
actually reached, at fractions of the step (``metarl check-step``; README, "Activation").

The inner step ``θ' = θ − α∇L_support(θ)`` adapts to the extent that ``∇L_support`` of one
batch carries the task rather than the batch's own noise. :func:`check_gradient_agreement`
measures the cosine between two independent batches' gradients of the same task (and of
different tasks): near 0, one batch's step is dominated by noise.
:func:`check_meta_gradient_agreement` asks the same of the meta-update: the cosine between two
independent meta-batches' meta-gradients and natural steps. It weighs every parameter
alike, including directions that barely change the return, so it orders policies of one
task family rather than predicting their returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from metarl.core import get_params
from metarl.core.functional import Params
from metarl.rl.config import RLConfig
from metarl.rl.episodes import Episodes
from metarl.rl.maml import inner_loss, objective_values, sampled_adaptation
from metarl.rl.maml_trpo import natural_step, sample_meta_batch
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.task_envs import make_batched_env
from metarl.rl.trpo import flatten


class StepPoint(NamedTuple):
    """The objective at ``θ − fraction · s``.

    Attributes:
        fraction: f.
        model_kl: ``½ f² sᵀ(F + λI)s = f² · max_kl``, the quadratic model (λ: ``cg_damping``).
        kl: the mean KL reached.
        model_loss_change: ``−f gᵀs``, the linear model of the surrogate loss.
        loss_change: the surrogate loss change reached.
    """

    fraction: float
    model_kl: float
    kl: float
    model_loss_change: float
    loss_change: float


def profile_natural_step(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    config: RLConfig,
    fractions: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 1.0),
) -> list[StepPoint]:
    """The trainer's natural step on one meta-batch, and the objective along it.

    The step is :func:`metarl.rl.maml_trpo.natural_step` with ``config`` (its meta-gradient mode,
    Fisher product and subsampling, conjugate gradient and damping λ), so the quadratic model
    is ``½ f² sᵀ(F + λI)s = f² · max_kl``.

    Args:
        policy: the policy module.
        theta: θ, without a task dimension.
        support: the inner steps' episodes, with advantages.
        query: the query episodes (sampled with the adapted parameters), with advantages.
        config: the run's config.
        fractions: the points ``f`` of ``θ − f s`` to measure.

    Raises:
        FloatingPointError: the step is not finite (a NaN loss or gradient).
    """
    step = natural_step(policy, theta, support, query, config)
    if not bool(torch.isfinite(step.full_step).all()):
        raise FloatingPointError(
            f"the natural step is not finite (surrogate loss {step.loss_before}): nothing to check"
        )
    slope = float(step.grad @ step.full_step)
    evaluate = objective_values(policy, theta, support, query, config.inner_lr, step.old_policy)
    theta0 = flatten(p.detach() for p in theta.values())
    points = []
    for f in fractions:
        loss_at, kl_at = evaluate(theta0 - f * step.full_step)
        points.append(StepPoint(f, f * f * config.max_kl, kl_at, -f * slope,
                                loss_at - step.loss_before))  # fmt: skip
    return points


def check_natural_step(
    policy: GaussianMLPPolicy, config: RLConfig, n_tasks: int | None = None,
    n_episodes: int | None = None, seed: int = 0,
) -> list[StepPoint]:  # fmt: skip
    """:func:`profile_natural_step` on one freshly sampled meta-batch of ``config``'s tasks.

    Sampled like one training iteration: support episodes with θ, inner steps, query episodes
    with θ' (``n_tasks`` tasks × ``n_episodes`` episodes, by default the config's
    ``meta_batch_size`` × ``episodes_per_task``; seeded by ``seed``).

    Raises:
        ValueError: ``n_tasks`` or ``n_episodes`` below 1.
    """
    support, query = _meta_batch(policy, config, n_tasks, n_episodes, seed)
    return profile_natural_step(policy, get_params(policy), support, query, config)


def _meta_batch(
    policy: GaussianMLPPolicy, config: RLConfig, n_tasks: int | None, n_episodes: int | None,
    seed: int,
) -> tuple[list[Episodes], Episodes]:  # fmt: skip
    """One meta-iteration's support and query episodes with θ, tasks and noise from ``seed``."""
    n_tasks, n_episodes = _batch_size(config, n_tasks, n_episodes)
    env = make_batched_env(config.env, n_tasks * n_episodes, config.horizon)
    noise = torch.Generator().manual_seed(seed)
    tasks = env.sample_tasks(n_tasks, np.random.default_rng(seed))
    env.seed([seed, 0])
    theta = get_params(policy)
    return sample_meta_batch(env, tasks, n_episodes, policy, theta, config, noise)


def _batch_size(config: RLConfig, n_tasks: int | None, n_episodes: int | None) -> tuple[int, int]:
    """Tasks and episodes per task of a check: the given ones, else one meta-iteration's."""
    n_tasks = config.meta_batch_size if n_tasks is None else n_tasks
    n_episodes = config.episodes_per_task if n_episodes is None else n_episodes
    if n_tasks < 1 or n_episodes < 1:
        raise ValueError(f"tasks and episodes must be at least 1, got {n_tasks} and {n_episodes}")
    return n_tasks, n_episodes


def format_step_profile(points: Sequence[StepPoint]) -> str:
    """A Markdown table of :func:`profile_natural_step`'s points."""
    lines = [
        "| f | KL model ½f²sᵀFs | KL measured | measured / model | loss model −f gᵀs | "
        "loss measured |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(f"| {p.fraction:g} | {p.model_kl:.2e} | {p.kl:.2e} | {p.kl / p.model_kl:.2f} "
                     f"| {p.model_loss_change:.2e} | {p.loss_change:.2e} |")  # fmt: skip
    return "\n".join(lines)


class GradientAgreement(NamedTuple):
    """Cosines between inner-loop gradients ``∇L_support(θ)`` of two independent batches.

    Attributes:
        same_task: ``(n_tasks,)``, task i's gradient on batch A against its gradient on batch
            B: about 0 when one batch's step is noise, 1 when the batch pins it down.
        other_tasks: the mean cosine of task i's gradient on A against task j's on B over the
            pairs whose tasks differ (NaN if none do): what different tasks share (positive)
            or set apart (negative, e.g. opposite directions).
        episodes: episodes per task in each batch.
    """

    same_task: np.ndarray
    other_tasks: float
    episodes: int


def gradient_cosines(
    batch_a: torch.Tensor, batch_b: torch.Tensor, same: np.ndarray
) -> tuple[np.ndarray, float]:
    """Cosines of task i's gradient on batch A with task i's and with other tasks' on batch B.

    Args:
        batch_a, batch_b: ``(n_tasks, n_params)``, row i from task i's episodes of each batch.
        same: ``(n_tasks, n_tasks)`` bool, whether tasks i and j are the same task (the
            diagonal is).

    Returns:
        ``cos(a_i, b_i)`` for every i, ``(n_tasks,)``; and the mean of ``cos(a_i, b_j)`` over
        the pairs with ``same[i, j]`` false (NaN if there are none).
    """
    a = torch.nn.functional.normalize(batch_a, dim=1)
    b = torch.nn.functional.normalize(batch_b, dim=1)
    cosines = (a @ b.T).numpy()
    other = cosines[~same]
    return cosines.diagonal().copy(), float(other.mean()) if other.size else float("nan")


def task_gradients(policy: GaussianMLPPolicy, theta: Params, episodes: Episodes) -> torch.Tensor:
    """``(n_tasks, n_params)``: each task's inner-loss gradient ``∇L_support(θ)`` at θ, flat in
    the order of ``theta`` (the direction of its first inner step; ``episodes`` with
    advantages)."""
    n = episodes.n_tasks
    params = {k: v.detach().expand(n, *v.shape).clone().requires_grad_(True)
              for k, v in theta.items()}  # fmt: skip
    losses = inner_loss(policy, episodes)(params)
    grads = torch.autograd.grad(losses.sum(), list(params.values()))
    return torch.cat([g.reshape(n, -1) for g in grads], dim=1)


def check_gradient_agreement(
    policy: GaussianMLPPolicy, config: RLConfig, n_tasks: int | None = None,
    n_episodes: int | None = None, seed: int = 0,
) -> GradientAgreement:  # fmt: skip
    """:class:`GradientAgreement` of ``policy`` on ``n_tasks`` freshly drawn tasks, each sampled
    twice with ``n_episodes`` episodes (by default the config's ``meta_batch_size`` and
    ``episodes_per_task``; advantages as in training; seeded by ``seed``).

    Raises:
        ValueError: ``n_tasks`` or ``n_episodes`` below 1.
    """
    n_tasks, n_episodes = _batch_size(config, n_tasks, n_episodes)
    env = make_batched_env(config.env, 2 * n_tasks * n_episodes, config.horizon)
    tasks = env.sample_tasks(n_tasks, np.random.default_rng(seed))
    env.seed([seed, 1])  # other resets than check_natural_step's meta-batch of the same seed
    theta = get_params(policy)
    # The task list twice: tasks i and n_tasks + i are the same task, sampled independently.
    (episodes,), _ = sampled_adaptation(
        env, tasks + tasks, n_episodes, policy, theta, 0, config.inner_lr, config,
        torch.Generator().manual_seed(seed),
    )  # fmt: skip
    gradients = task_gradients(policy, theta, episodes)
    values = env.task_array(tasks)
    same = (values[:, None, :] == values[None, :, :]).all(axis=-1)
    same_task, other_tasks = gradient_cosines(gradients[:n_tasks], gradients[n_tasks:], same)
    return GradientAgreement(same_task, other_tasks, n_episodes)


def format_gradient_agreement(agreement: GradientAgreement) -> str:
    """One line: the same-task cosines' mean ± standard error, and the other tasks' mean."""
    same = agreement.same_task
    error = same.std(ddof=1) / np.sqrt(len(same)) if len(same) > 1 else float("nan")
    return (f"inner gradient, two independent batches of {agreement.episodes} episodes per task: "
            f"cosine {same.mean():.3f} ± {error:.3f} within a task, {agreement.other_tasks:.3f} "
            "between different tasks (near 0: one batch's step is mostly noise)")  # fmt: skip


class MetaGradientAgreement(NamedTuple):
    """Cosines between two independent meta-batches' meta-updates (one pair of batches).

    Attributes:
        gradient: ``cos(g_A, g_B)`` of the meta-gradients ``g = ∇_θ`` of the post-adaptation
            surrogate loss: near 0 when one meta-batch's gradient is mostly noise.
        natural_step: ``cos(s_A, s_B)`` of TRPO's steps ``s ∝ F⁻¹g`` (lower than the
            gradients': the inverse Fisher amplifies the noise in flat directions). NaN if a
            step is not finite.
        tasks: tasks per meta-batch.
        episodes: episodes per task.
    """

    gradient: float
    natural_step: float
    tasks: int
    episodes: int


def check_meta_gradient_agreement(
    policy: GaussianMLPPolicy, config: RLConfig, n_tasks: int | None = None,
    n_episodes: int | None = None, seed: int = 0,
) -> MetaGradientAgreement:  # fmt: skip
    """:class:`MetaGradientAgreement` of two meta-batches sampled like training iterations
    (seeds ``seed`` and ``seed + 1``; sizes as :func:`check_natural_step`'s)."""
    n_tasks, n_episodes = _batch_size(config, n_tasks, n_episodes)
    theta = get_params(policy)
    steps = []
    for batch_seed in (seed, seed + 1):
        support, query = _meta_batch(policy, config, n_tasks, n_episodes, batch_seed)
        steps.append(natural_step(policy, theta, support, query, config))
    a, b = steps
    return MetaGradientAgreement(_cosine(a.grad, b.grad), _cosine(a.full_step, b.full_step),
                                 n_tasks, n_episodes)  # fmt: skip


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) of two flat vectors; NaN unless both are finite and non-zero."""
    value = float(a @ b / (a.norm() * b.norm()))
    return value if np.isfinite(value) else float("nan")


def format_meta_gradient_agreement(agreement: MetaGradientAgreement) -> str:
    """One line with both cosines."""
    return (
        f"meta-gradient, two independent meta-batches of {agreement.tasks} tasks x "
        f"{agreement.episodes} episodes: cosine {agreement.gradient:.3f} (natural step "
        f"{agreement.natural_step:.3f}; near 0: one meta-batch's update is mostly noise)"
    )
