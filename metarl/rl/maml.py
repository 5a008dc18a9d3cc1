"""MAML for policies: adaptation on episodes, and the post-adaptation objective as a function of θ.

The TRPO meta-update treats ``θ ↦ (surrogate loss, KL)`` as an ordinary function of the
policy's parameters: every evaluation re-runs the inner adaptation from θ on the same support
episodes, so the natural gradient and the trust region both see θ through θ'(θ) (Finn et al.
2017, Sec. 3.2 and App. A.2; pytorch-maml-rl ``MAMLTRPO.surrogate_loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Independent

from metarl.core.adapt import LossFn, MetaGradientMode, inner_step
from metarl.core.functional import Params, expand_to_tasks
from metarl.distributed import ALONE, Shard, TaskReduction
from metarl.envs import BatchedTaskEnv
from metarl.rl.baseline import LinearFeatureBaseline
from metarl.rl.episodes import Episodes, with_advantages
from metarl.rl.losses import mean_kl, reinforce_loss, surrogate_loss
from metarl.rl.policy import GaussianMLPPolicy, detach_distribution
from metarl.rl.sampler import sample_episodes

if TYPE_CHECKING:
    from metarl.rl.config import RLConfig
from metarl.rl.trpo import flatten, unflatten


def require_advantages(episodes: Episodes) -> Tensor:
    """The episodes' advantages; a clear error if they were never computed."""
    if episodes.advantages is None:
        raise ValueError("episodes have no advantages: call metarl.rl.episodes.with_advantages")
    return episodes.advantages


def inner_loss(policy: GaussianMLPPolicy, episodes: Episodes) -> LossFn:
    """``params -> (n_tasks,)`` REINFORCE losses of ``episodes`` (the inner-loop loss)."""
    advantages = require_advantages(episodes)

    def loss(params: Params) -> Tensor:
        pi = policy.distribution(params, episodes.observations, task_dim=1)
        log_probs = pi.log_prob(episodes.actions)
        return reinforce_loss(log_probs, advantages, episodes.masks)

    return loss


def adapt_to_episodes(
    policy: GaussianMLPPolicy,
    params: Params,
    support: Sequence[Episodes],
    step_sizes: float | Sequence[float],
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-2,
) -> Params:
    """θ' after one inner step per element of ``support`` (step ``k`` on ``support[k]``).

    Args:
        policy: the policy module.
        params: θ with a leading task dimension (see :func:`metarl.core.expand_to_tasks`).
        support: the episodes of each inner step, sampled with the parameters of that step.
        step_sizes: α, or one α per step.
        mode: how the meta-gradient crosses the steps (see :mod:`metarl.core.adapt`).
        fd_epsilon: perturbation of the finite-difference mode.
    """
    for k, episodes in enumerate(support):
        params = inner_step(inner_loss(policy, episodes), params, step_sizes, k, mode, fd_epsilon)
    return params


def sampled_adaptation(
    env: BatchedTaskEnv,
    tasks: list[dict[str, Any]],
    n_episodes: int,
    policy: GaussianMLPPolicy,
    theta: Params,
    steps: int,
    step_sizes: float | Sequence[float],
    config: RLConfig,
    generator: torch.Generator | None,
    check_finite: bool = True,
    on_sample: Callable[[], object] | None = None,
    shard: Shard | None = None,
) -> tuple[list[Episodes], list[Params]]:
    """Sample, take a REINFORCE step on what was sampled, sample again: the adaptation by
    experience of MAML for RL, for every task at once.

    Args:
        env: ``len(tasks) × n_episodes`` environments, already seeded.
        tasks: the tasks.
        n_episodes: episodes per task and step.
        policy: the policy module.
        theta: θ, without a task dimension.
        steps: inner steps.
        step_sizes: α, or one α per step.
        config: reads ``baseline_reg, gamma, gae_lambda, normalize_advantages``.
        generator: the action noise.
        check_finite: stop on a non-finite inner loss. Without it (evaluation) the step is
            taken, and a policy it makes diverge stops at the next rollout, whose actions
            are checked (:class:`~metarl.envs.task_env.DivergedActions`, one line).
        on_sample: called after each batch of episodes (a progress bar's ``update``).
        shard: this process's tasks of a meta-batch shared by several processes (the action
            noise is drawn for the whole batch).

    Returns:
        ``steps + 1`` batches of episodes with advantages, the k-th sampled with the
        parameters after k steps; and those parameters (task dimension first, detached). The
        steps are first order: they produce θ' to sample with, without a graph.
    """
    baseline = LinearFeatureBaseline(config.baseline_reg)
    params = expand_to_tasks({n: p.detach() for n, p in theta.items()}, len(tasks))
    episodes, stages = [], [params]
    for k in range(steps + 1):
        sampled = sample_episodes(env, tasks, n_episodes, policy, params, generator, shard)
        if on_sample is not None:
            on_sample()
        episodes.append(with_advantages(
            sampled, baseline, config.gamma, config.gae_lambda, config.normalize_advantages
        ))  # fmt: skip
        if k == steps:
            break
        adapted = inner_step(
            inner_loss(policy, episodes[-1]), params, step_sizes, k, "first_order",
            check_finite=check_finite,
        )  # fmt: skip
        params = {n: p.detach() for n, p in adapted.items()}
        stages.append(params)
    return episodes, stages


class MetaObjective(NamedTuple):
    """The post-adaptation objective of every task at one θ.

    Attributes:
        losses: ``(n_tasks,)`` TRPO surrogate losses on the query episodes.
        kls: ``(n_tasks,)`` mean KL between the old adapted policy and the one at this θ.
        query_policy: ``π_θ'`` on the query observations (detach it to get the "old" policy).
    """

    losses: Tensor
    kls: Tensor
    query_policy: Independent


def meta_objective(
    policy: GaussianMLPPolicy,
    theta: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent | None = None,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-2,
) -> MetaObjective:
    """Adapt θ on ``support``, then the surrogate loss and KL of ``query`` at θ'.

    Args:
        policy: the policy module.
        theta: θ, without a task dimension (gradients flow back to these tensors).
        support: the inner steps' episodes.
        query: episodes sampled with the adapted parameters of the old θ, with advantages.
        step_sizes: the inner α (per step).
        old_policy: ``π_θ'_old`` on the query observations; ``None`` means "θ is the old θ":
            the adapted policy itself, detached, is used (ratio 1, KL 0).
        mode: meta-gradient mode of the adaptation (``first_order`` gives the same values
            without a second-order graph, which is all a line search needs).
        fd_epsilon: perturbation of the finite-difference mode.
    """
    advantages = require_advantages(query)
    adapted = adapt_to_episodes(
        policy, expand_to_tasks(theta, query.n_tasks), support, step_sizes, mode, fd_epsilon
    )
    pi = policy.distribution(adapted, query.observations, task_dim=1)
    old = detach_distribution(pi) if old_policy is None else old_policy
    losses = surrogate_loss(
        pi.log_prob(query.actions), old.log_prob(query.actions), advantages, query.masks
    )
    return MetaObjective(losses, mean_kl(old, pi, query.masks), pi)


def objective_values(
    policy: GaussianMLPPolicy,
    like: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent,
    reduction: TaskReduction = ALONE,
) -> Callable[[Tensor], tuple[float, float]]:
    """flat θ ↦ (mean surrogate loss, mean KL) over tasks: what the line search evaluates.

    Values only, so the adaptation runs first-order (same numbers, no second-order graph).
    ``like`` gives the names and shapes of the parameters; ``reduction`` averages over the
    tasks of every process.
    """

    def evaluate(flat: Tensor) -> tuple[float, float]:
        at = meta_objective(
            policy, unflatten(flat, like), support, query, step_sizes, old_policy, "first_order"
        )
        means = torch.stack([reduction.share(at.losses.detach()), reduction.share(at.kls.detach())])
        loss, kl = reduction.total(means).tolist()
        return float(loss), float(kl)

    return evaluate


def kl_gradient(
    policy: GaussianMLPPolicy,
    like: Params,
    support: Sequence[Episodes],
    query: Episodes,
    step_sizes: float | Sequence[float],
    old_policy: Independent,
    mode: MetaGradientMode = "second_order",
    fd_epsilon: float = 1e-2,
    reduction: TaskReduction = ALONE,
) -> Callable[[Tensor], Tensor]:
    """flat θ ↦ flat ∇_θ mean KL(π_old || π_θ'(θ)), through the adaptation (``mode``); with
    several processes, this process's share of it (``reduction``; the caller sums the products
    it makes of it, which are linear in it).

    The input of :func:`metarl.rl.fisher.finite_difference_fvp`.
    """

    def gradient(flat: Tensor) -> Tensor:
        leaves = {n: t.clone().requires_grad_(True) for n, t in unflatten(flat, like).items()}
        kl = reduction.share(
            meta_objective(
                policy, leaves, support, query, step_sizes, old_policy, mode, fd_epsilon
            ).kls
        )
        return flatten(torch.autograd.grad(kl, list(leaves.values())))

    return gradient
