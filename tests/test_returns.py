"""Returns, GAE and normalisation against hand-computed numbers and a plain-Python loop."""

from __future__ import annotations

import pytest
import torch

from metarl.rl.returns import discounted_returns, gae, normalize_advantages


def _random_batch(
    seed: int, horizon: int = 9, batch: int = 7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Random rewards (T, B), values (T+1, B), prefix masks (T, B) and the episode lengths."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(horizon, batch, generator=gen, dtype=torch.float64)
    values = torch.randn(horizon + 1, batch, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, horizon + 1, (batch,), generator=gen).tolist()
    lengths[0] = horizon  # at least one episode runs to the horizon
    masks = torch.zeros(horizon, batch, dtype=torch.float64)
    for b, length in enumerate(lengths):
        masks[:length, b] = 1.0
    return rewards, values, masks, lengths


def _loop_returns(rewards: list[float], gamma: float) -> list[float]:
    """R_t = sum_k gamma^k r_{t+k}, written as a double loop over one episode."""
    return [
        sum(gamma**k * rewards[t + k] for k in range(len(rewards) - t)) for t in range(len(rewards))
    ]


def _loop_gae(
    rewards: list[float], values: list[float], bootstrap: float, gamma: float, lam: float
) -> list[float]:
    """A_t = sum_k (gamma lam)^k delta_{t+k} over one episode whose next value is `bootstrap`."""
    next_values = values[1:] + [bootstrap]
    deltas = [r + gamma * nv - v for r, nv, v in zip(rewards, next_values, values, strict=True)]
    return [
        sum((gamma * lam) ** k * deltas[t + k] for k in range(len(deltas) - t))
        for t in range(len(deltas))
    ]


def test_discounted_returns_hand_computed() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    masks = torch.ones(3, 1)
    # R_2 = 3; R_1 = 2 + 0.5 * 3 = 3.5; R_0 = 1 + 0.5 * 3.5 = 2.75
    expected = torch.tensor([[2.75], [3.5], [3.0]])
    torch.testing.assert_close(discounted_returns(rewards, masks, gamma=0.5), expected)


def test_discounted_returns_hand_computed_with_padding() -> None:
    # Column 1 ends after 2 steps; its padded reward (100) must be ignored.
    rewards = torch.tensor([[1.0, 4.0], [2.0, 2.0], [3.0, 100.0]])
    masks = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    expected = torch.tensor([[2.75, 5.0], [3.5, 2.0], [3.0, 0.0]])
    torch.testing.assert_close(discounted_returns(rewards, masks, gamma=0.5), expected)


def test_gae_hand_computed() -> None:
    # One terminated episode of 2 steps padded to T = 3, gamma = 0.5, lam = 0.5.
    rewards = torch.tensor([[1.0], [2.0], [7.0]])
    values = torch.tensor([[0.5], [1.0], [9.0], [9.0]])
    masks = torch.tensor([[1.0], [1.0], [0.0]])
    # delta_1 = 2 + 0.5 * 0 - 1 = 1            (terminal: next value 0)
    # delta_0 = 1 + 0.5 * 1 - 0.5 = 1
    # A_1 = 1; A_0 = 1 + 0.25 * 1 = 1.25; A_2 = 0 (padding)
    expected = torch.tensor([[1.25], [1.0], [0.0]])
    torch.testing.assert_close(gae(rewards, values, masks, gamma=0.5, lam=0.5), expected)


def test_gae_hand_computed_bootstraps_at_horizon() -> None:
    rewards = torch.tensor([[1.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [4.0]])
    masks = torch.ones(2, 1)
    # delta_1 = 2 + 0.5 * 4 - 1 = 3; delta_0 = 1 + 0.5 * 1 - 0.5 = 1
    # A_1 = 3; A_0 = 1 + 0.5 * 1.0 * 3 = 2.5   (lam = 1)
    expected = torch.tensor([[2.5], [3.0]])
    torch.testing.assert_close(gae(rewards, values, masks, gamma=0.5, lam=1.0), expected)


@pytest.mark.parametrize("seed", range(5))
def test_discounted_returns_match_loop(seed: int) -> None:
    rewards, _, masks, lengths = _random_batch(seed)
    gamma = 0.9
    result = discounted_returns(rewards, masks, gamma)
    for b, length in enumerate(lengths):
        expected = _loop_returns(rewards[:length, b].tolist(), gamma)
        torch.testing.assert_close(result[:length, b].tolist(), expected)
        assert (result[length:, b] == 0).all()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_loop(seed: int, lam: float) -> None:
    rewards, values, masks, lengths = _random_batch(seed)
    horizon, gamma = rewards.shape[0], 0.9
    result = gae(rewards, values, masks, gamma, lam)
    for b, length in enumerate(lengths):
        # Only the episodes alive at the last step bootstrap from values[T].
        bootstrap = values[horizon, b].item() if length == horizon else 0.0
        expected = _loop_gae(
            rewards[:length, b].tolist(), values[:length, b].tolist(), bootstrap, gamma, lam
        )
        torch.testing.assert_close(result[:length, b].tolist(), expected)
        assert (result[length:, b] == 0).all()


def test_gae_lambda_one_is_returns_minus_values() -> None:
    rewards, values, masks, _ = _random_batch(11)
    values = values.clone()
    values[-1] = 0.0  # no bootstrap: every episode's end counts as terminal
    advantages = gae(rewards, values, masks, gamma=0.97, lam=1.0)
    expected = (discounted_returns(rewards, masks, 0.97) - values[:-1]) * masks
    torch.testing.assert_close(advantages, expected)


def test_functions_do_not_modify_arguments() -> None:
    rewards, values, masks, _ = _random_batch(3)
    copies = [rewards.clone(), values.clone(), masks.clone()]
    discounted_returns(rewards, masks, 0.9)
    advantages = gae(rewards, values, masks, 0.9, 0.95)
    advantages_copy = advantages.clone()
    normalize_advantages(advantages, masks)
    originals = [rewards, values, masks, advantages]
    for original, copy in zip(originals, [*copies, advantages_copy], strict=True):
        assert torch.equal(original, copy)


def test_normalization_ignores_padded_entries() -> None:
    advantages = torch.tensor([[1.0, 3.0], [5.0, 1000.0], [-1000.0, float("nan")]])
    masks = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    # Valid entries 1, 3, 5: mean 3, population std sqrt(8/3).
    std = (8.0 / 3.0) ** 0.5
    expected = torch.tensor([[-2.0 / std, 0.0], [2.0 / std, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(normalize_advantages(advantages, masks, eps=0.0), expected)
    result = normalize_advantages(advantages, masks)
    valid = result[masks.bool()]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0))
    torch.testing.assert_close(valid.std(unbiased=False), torch.tensor(1.0))


def test_gradients_flow_into_values() -> None:
    rewards, values, masks, _ = _random_batch(5)
    values.requires_grad_(True)
    gae(rewards, values, masks, 0.9, 0.9).sum().backward()
    assert values.grad is not None and values.grad.abs().sum() > 0


def test_shape_and_value_errors_name_the_argument() -> None:
    rewards, values, masks, _ = _random_batch(0)
    with pytest.raises(ValueError, match="rewards"):
        discounted_returns(rewards[0], masks[0], 0.9)
    with pytest.raises(ValueError, match="masks"):
        discounted_returns(rewards, masks[:-1], 0.9)
    with pytest.raises(ValueError, match="values"):
        gae(rewards, values[:-1], masks, 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, masks, 1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(rewards, values, masks, 0.9, -0.1)
    holes = torch.tensor([[1.0], [0.0], [1.0]])
    with pytest.raises(ValueError, match="prefix"):
        discounted_returns(torch.ones(3, 1), holes, 0.9)
    with pytest.raises(ValueError, match="no valid entry"):
        normalize_advantages(torch.ones(2, 2), torch.zeros(2, 2))
