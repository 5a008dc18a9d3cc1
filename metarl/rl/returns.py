"""Discounted returns, generalised advantage estimation and advantage normalisation.

Layout: time first, ``(T, B)``, one column per episode. ``masks[t, b]`` is 1 while episode ``b``
is alive at step ``t`` (the step was really taken) and 0 for the padding after it ended; every
column is a run of ones followed by zeros. Rewards and values on padded steps are ignored
(they need not be zero, only finite) and every output is 0 there.

All functions are pure (no argument is modified) and differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_time_batch(name: str, tensor: Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (T, B), got {tuple(tensor.shape)}")


def _check_masks(rewards: Tensor, masks: Tensor) -> None:
    if masks.shape != rewards.shape:
        raise ValueError(
            f"masks must have the shape of rewards {tuple(rewards.shape)}, got {tuple(masks.shape)}"
        )
    if not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError("masks must contain only 0 and 1")
    # A 1 after a 0 would mean an episode came back to life: a layout bug in the caller.
    if masks.shape[0] > 1 and bool((masks[1:] > masks[:-1]).any()):
        raise ValueError("masks must be 1 on a prefix of each column, then 0")


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def discounted_returns(rewards: Tensor, masks: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``R_t = r_t + gamma * R_{t+1}`` inside each episode.

    Args:
        rewards: ``(T, B)``.
        masks: ``(T, B)``, 1 on valid steps, 0 on padding.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``(T, B)`` returns; nothing is bootstrapped after step ``T - 1`` (the episode's last
        step counts as its end, as in the MAML reference implementation); 0 on padding.
    """
    _check_time_batch("rewards", rewards)
    _check_masks(rewards, masks)
    _check_unit_interval("gamma", gamma)
    masks = masks.to(rewards.dtype)
    running = torch.zeros_like(rewards[0])
    returns = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        # Masking the sum (not only the reward) keeps padding at 0 and cuts the recursion
        # at the end of each episode.
        running = masks[t] * (rewards[t] + gamma * running)
        returns.append(running)
    return torch.stack(returns[::-1]) if returns else torch.zeros_like(rewards)


def gae(rewards: Tensor, values: Tensor, masks: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``A_t = sum_k (gamma * lam)^k * delta_{t+k}`` with
    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` summed inside each episode.

    Bootstrapping convention: the value of the state after an episode's last step is

    - 0 if the episode ended before the horizon (its next step is padding: ``masks[t+1] = 0``),
      i.e. the episode is treated as terminated;
    - ``values[T]`` if the episode is still alive at the last step ``T - 1``, i.e. it was
      truncated by the horizon.

    The masks alone cannot tell "terminated exactly at step ``T - 1``" from "truncated at the
    horizon", so the caller decides through ``values[T]``: put the value of the final
    observation there to bootstrap a truncated episode, or 0 for a terminated one. The MAML
    reference implementation (pytorch-maml-rl ``BatchEpisodes.gae``) pads the values with 0,
    i.e. never bootstraps; pass ``values[T] = 0`` to reproduce it.

    Args:
        rewards: ``(T, B)``.
        values: ``(T + 1, B)``, ``values[t]`` estimates ``V(s_t)``; entries on padded steps are
            ignored.
        masks: ``(T, B)``, 1 on valid steps, 0 on padding.
        gamma: discount in ``[0, 1]``.
        lam: GAE parameter in ``[0, 1]``; ``lam = 1`` gives Monte-Carlo returns minus values,
            ``lam = 0`` the one-step TD error.

    Returns:
        ``(T, B)`` advantages, 0 on padding. Gradients flow into ``values``; detach it first
        for a policy-gradient loss.
    """
    _check_time_batch("rewards", rewards)
    _check_masks(rewards, masks)
    if values.shape != (rewards.shape[0] + 1, rewards.shape[1]):
        raise ValueError(
            f"values must have shape (T + 1, B) = {(rewards.shape[0] + 1, rewards.shape[1])}, "
            f"got {tuple(values.shape)}"
        )
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    masks = masks.to(rewards.dtype)
    # Whether the state after step t is part of the episode: masks[t + 1] inside the window,
    # and "yes" after the last step so that values[T] is used for episodes alive at T - 1.
    next_alive = torch.cat([masks[1:], torch.ones_like(masks[:1])])
    deltas = rewards + gamma * next_alive * values[1:] - values[:-1]
    running = torch.zeros_like(rewards[0])
    advantages = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = masks[t] * (deltas[t] + gamma * lam * running)
        advantages.append(running)
    return torch.stack(advantages[::-1]) if advantages else torch.zeros_like(rewards)


def normalize_advantages(advantages: Tensor, masks: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise advantages using the valid entries only.

    ``(A - mean) / (std + eps)`` where mean and (population, ``ddof = 0``) standard deviation
    are taken over the entries with ``masks == 1`` of the whole ``(T, B)`` batch; padded
    entries do not bias the statistics and stay 0.

    Args:
        advantages: ``(T, B)``.
        masks: ``(T, B)``, 1 on valid steps, 0 on padding.
        eps: added to the standard deviation to avoid dividing by 0.

    Returns:
        ``(T, B)`` normalised advantages.
    """
    _check_time_batch("advantages", advantages)
    _check_masks(advantages, masks)
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    masks = masks.to(advantages.dtype)
    count = masks.sum()
    if count == 0:
        raise ValueError("masks has no valid entry: cannot normalise")
    # where() rather than multiplying by the mask: garbage (even inf/nan) on padding stays out.
    valid = torch.where(masks.bool(), advantages, torch.zeros_like(advantages))
    mean = valid.sum() / count
    centred = torch.where(masks.bool(), advantages - mean, torch.zeros_like(advantages))
    std = torch.sqrt((centred**2).sum() / count)
    return centred / (std + eps)
