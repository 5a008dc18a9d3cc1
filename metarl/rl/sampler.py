"""Collect episodes for every task of a meta-batch at once.

All ``n_tasks × E`` episodes are stepped together in one :class:`~metarl.envs.BatchedTaskEnv`
(environment ``i * E + e`` runs episode ``e`` of task ``i``), and the policy is evaluated once
per time step for the whole batch, each task with its own (adapted) parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metarl.core.functional import Params, task_forward
from metarl.distributed import Shard
from metarl.envs import BatchedTaskEnv
from metarl.rl.episodes import Episodes
from metarl.rl.policy import GaussianMLPPolicy

ActFn = Callable[[Tensor], Tensor]
"""``observations (n_tasks, E, obs_dim) -> actions (n_tasks, E, action_dim)``."""


def rollout(
    env: BatchedTaskEnv, tasks: list[dict[str, Any]], episodes_per_task: int, act: ActFn
) -> Episodes:
    """Run ``episodes_per_task`` episodes of every task in ``tasks`` with the controller ``act``.

    Stepping stops as soon as every episode has ended, so ``T`` is the longest episode.

    Args:
        env: a batched environment with ``num_envs == len(tasks) * episodes_per_task``.
        tasks: the tasks of the meta-batch.
        episodes_per_task: ``E``.
        act: the controller, called once per time step on all running and finished episodes
            (the actions of finished ones are ignored by the environment).

    Returns:
        :class:`Episodes` without returns or advantages, float32 tensors on the CPU.
    """
    n_tasks = len(tasks)
    if env.num_envs != n_tasks * episodes_per_task:
        raise ValueError(
            f"the environment batch has {env.num_envs} environments, but {n_tasks} tasks × "
            f"{episodes_per_task} episodes need {n_tasks * episodes_per_task}"
        )
    env.set_tasks([task for task in tasks for _ in range(episodes_per_task)])
    obs = torch.from_numpy(env.reset())
    done = torch.zeros(env.num_envs, dtype=torch.bool)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(env.horizon):
        batch_obs = obs.reshape(n_tasks, episodes_per_task, -1)
        action = act(batch_obs)
        if not bool(torch.isfinite(action).all()):
            raise FloatingPointError(
                "the policy's actions are not finite: its parameters diverged (a smaller "
                "inner_lr or eval_lr, or max_kl, keeps the steps stable)"
            )
        step = env.step(action.reshape(env.num_envs, -1).numpy())
        observations.append(batch_obs)
        actions.append(action)
        masks.append(~done)  # the step was taken iff the episode had not ended before it
        rewards.append(torch.from_numpy(step.reward))
        done = torch.from_numpy(step.terminated | step.truncated)
        obs = torch.from_numpy(step.observation)
        if bool(done.all()):
            break
    shape = (len(rewards), n_tasks, episodes_per_task)
    return Episodes(
        observations=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=torch.stack(rewards).reshape(shape),
        masks=torch.stack(masks).reshape(shape).to(torch.float32),
    )


def sample_gaussian(
    mean: Tensor, log_std: Tensor, generator: torch.Generator | None, shard: Shard | None = None
) -> Tensor:
    """``a = μ + σ · ε``, ``ε ~ N(0, I)`` from ``generator``: every sampled action in metarl.

    With ``shard`` (a process's tasks, the first dimension of ``mean``), ``ε`` is drawn for the
    whole meta-batch and this process keeps its rows: the same noise as one process would use.
    """
    if shard is None:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    else:
        full = torch.randn((shard.total, *mean.shape[1:]), generator=generator, dtype=mean.dtype)
        noise = full[shard.start : shard.stop]
    return mean + log_std.exp() * noise


def policy_actions(
    policy: GaussianMLPPolicy,
    params: Params,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> ActFn:
    """The controller that samples ``a ~ π_params(· | s)``, one parameter set per task.

    Args:
        policy: the policy module.
        params: its parameters with a leading task dimension ``n_tasks``.
        generator: the source of the action noise (seeded: episodes are reproducible).
        shard: this process's tasks of a meta-batch shared by several processes.
    """

    def act(obs: Tensor) -> Tensor:
        with torch.no_grad():
            mean, log_std = task_forward(policy, params, obs)
            return sample_gaussian(mean, log_std, generator, shard)

    return act


def sample_episodes(
    env: BatchedTaskEnv,
    tasks: list[dict[str, Any]],
    episodes_per_task: int,
    policy: GaussianMLPPolicy,
    params: Params,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Episodes:
    """Episodes of every task with the policy at the task's own ``params`` (see :func:`rollout`;
    ``shard``: :func:`policy_actions`)."""
    detached = {name: p.detach() for name, p in params.items()}
    act = policy_actions(policy, detached, generator, shard)
    return rollout(env, tasks, episodes_per_task, act)
