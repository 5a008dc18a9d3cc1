"""A batch of episodes for a meta-batch of tasks, and its returns and advantages.

Layout: time first, then task, then episode: ``(T, n_tasks, E, ...)``. ``masks[t, i, e]`` is 1
while episode ``e`` of task ``i`` is running at step ``t`` and 0 on the padding after it ended
(rewards are 0 there). ``T`` is the longest episode of the batch (at most the horizon).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from metarl.rl.baseline import LinearFeatureBaseline
from metarl.rl.returns import discounted_returns, gae, normalize_advantages


class Episodes(NamedTuple):
    """Episodes of ``n_tasks`` tasks × ``E`` episodes each.

    Attributes:
        observations: ``(T, n_tasks, E, obs_dim)``, the observation each action was taken in.
        actions: ``(T, n_tasks, E, action_dim)``, as sampled (before any clipping by the env).
        rewards: ``(T, n_tasks, E)``.
        masks: ``(T, n_tasks, E)``, 1 on steps taken, 0 on padding.
        returns: ``(T, n_tasks, E)`` discounted reward-to-go, set by :func:`with_advantages`.
        advantages: ``(T, n_tasks, E)``, set by :func:`with_advantages`.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    masks: Tensor
    returns: Tensor | None = None
    advantages: Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode, ``(n_tasks, E)`` (the paper's metric)."""
        return self.rewards.sum(dim=0)

    def task_returns(self) -> Tensor:
        """Mean undiscounted return of each task's episodes, ``(n_tasks,)``."""
        return self.episode_returns().mean(dim=1)

    def every_kth_episode(self, k: int) -> Episodes:
        """Episodes ``0, k, 2k, ...`` of every task (views, no copy); ``k = 1`` returns self."""
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if k == 1:
            return self
        return Episodes(*(None if x is None else x[:, :, ::k] for x in self))


def with_advantages(
    episodes: Episodes,
    baseline: LinearFeatureBaseline,
    gamma: float,
    gae_lambda: float,
    normalize: bool = True,
) -> Episodes:
    """``episodes`` with ``returns`` and ``advantages`` filled in (the input is not modified).

    The linear baseline is fitted on each task's own episodes (as in the paper's code); GAE
    uses value 0 after the last step of every episode, i.e. episodes cut by the horizon are not
    bootstrapped, like pytorch-maml-rl. With ``normalize``, each task's advantages are
    standardised over its valid steps.
    """
    horizon, n_tasks, n_episodes = episodes.rewards.shape
    flat = (horizon, n_tasks * n_episodes)
    rewards, masks = episodes.rewards.reshape(flat), episodes.masks.reshape(flat)
    returns = discounted_returns(rewards, masks, gamma).reshape(horizon, n_tasks, n_episodes)
    values = baseline.fit_predict_per_task(episodes.observations, returns, episodes.masks)
    values = torch.cat([values.reshape(flat), torch.zeros_like(rewards[:1])])
    advantages = gae(rewards, values, masks, gamma, gae_lambda)
    advantages = advantages.reshape(horizon, n_tasks, n_episodes)
    if normalize:
        # One call per task: normalize_advantages pools its whole (T, B) input, and the
        # statistics must be each task's own. n_tasks small calls cost well under a millisecond.
        advantages = torch.stack(
            [normalize_advantages(advantages[:, i], episodes.masks[:, i]) for i in range(n_tasks)],
            dim=1,
        )
    return episodes._replace(returns=returns, advantages=advantages.detach())
