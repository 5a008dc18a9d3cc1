"""Linear feature baseline against an independent numpy ridge regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.rl.baseline import LinearFeatureBaseline, linear_baseline_features, ridge_fit


def _numpy_features(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[o, o^2, t/100, (t/100)^2, (t/100)^3, 1] per valid step, one row per step (loops, numpy).

    observations: (T, B, D); masks: (T, B). Returns (number of valid steps, 2D + 4).
    """
    rows = []
    for b in range(observations.shape[1]):
        for t in range(observations.shape[0]):
            if masks[t, b] == 0:
                continue
            o = np.clip(observations[t, b], -10.0, 10.0)
            s = t / 100.0
            rows.append(np.concatenate([o, o * o, [s, s * s, s * s * s, 1.0]]))
    return np.array(rows)


def _numpy_ridge(x: np.ndarray, y: np.ndarray, reg: float) -> np.ndarray:
    """Ridge regression as ordinary least squares on the augmented system [X; sqrt(reg) I]."""
    n_features = x.shape[1]
    x_aug = np.vstack([x, np.sqrt(reg) * np.eye(n_features)])
    y_aug = np.concatenate([y, np.zeros(n_features)])
    return np.linalg.lstsq(x_aug, y_aug, rcond=None)[0]


def _episodes(
    seed: int, horizon: int = 12, episodes: int = 5, obs_dim: int = 3, lead: tuple = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random observations (T, *lead, E, D) with some beyond the clip range, returns, masks."""
    gen = torch.Generator().manual_seed(seed)
    shape = (horizon, *lead, episodes)
    observations = 4.0 * torch.randn(*shape, obs_dim, generator=gen, dtype=torch.float64)
    returns = torch.randn(*shape, generator=gen, dtype=torch.float64)
    lengths = torch.randint(2, horizon + 1, shape[1:], generator=gen)
    steps = torch.arange(horizon).reshape(-1, *([1] * len(shape[1:])))
    masks = (steps < lengths).to(torch.float64)
    return observations, returns, masks


def test_features_match_definition() -> None:
    observations, _, masks = _episodes(0, horizon=5, episodes=2, obs_dim=2)
    observations[1, 0, 0] = 25.0  # clipped to 10
    features = linear_baseline_features(observations, masks)
    assert features.shape == (5, 2, 8)
    expected = _numpy_features(observations.numpy(), masks.numpy())
    np.testing.assert_allclose(features.permute(1, 0, 2)[masks.T.bool()].numpy(), expected)
    assert features[1, 0, 0] == 10.0 and features[1, 0, 2] == 100.0
    assert (features[masks == 0] == 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_fit_matches_numpy_ridge(seed: int) -> None:
    observations, returns, masks = _episodes(seed)
    baseline = LinearFeatureBaseline()
    baseline.fit(observations, returns, masks)

    x = _numpy_features(observations.numpy(), masks.numpy())
    y = returns.numpy().T[masks.numpy().T == 1]  # same (episode, step) order as the rows
    expected = _numpy_ridge(x, y, reg=1e-5)
    assert baseline.weight is not None
    np.testing.assert_allclose(baseline.weight.numpy(), expected, rtol=1e-6, atol=1e-8)

    values = baseline.predict(observations, masks)
    assert values.shape == returns.shape and values.dtype == observations.dtype
    np.testing.assert_allclose(values.T[masks.T.bool()].numpy(), x @ expected, atol=1e-8)
    assert (values[masks == 0] == 0).all()


def test_fit_recovers_a_target_linear_in_the_features() -> None:
    # Recovered up to the ridge's shrinkage, which is felt by the nearly collinear, tiny time
    # features (t/100 <= 0.19 here), hence the loose tolerance.
    observations, _, masks = _episodes(4, horizon=20, episodes=8, obs_dim=2)
    observations = observations.clamp(-10, 10)
    true_weight = torch.tensor([0.5, -1.0, 0.1, 0.2, 3.0, -2.0, 1.0, 0.7], dtype=torch.float64)
    returns = linear_baseline_features(observations, masks) @ true_weight
    baseline = LinearFeatureBaseline()
    baseline.fit(observations, returns, masks)
    torch.testing.assert_close(baseline.predict(observations, masks), returns, atol=2e-3, rtol=0)


def test_fit_predict_per_task_equals_separate_fits() -> None:
    n_tasks = 4
    observations, returns, masks = _episodes(7, lead=(n_tasks,))  # (T, n_tasks, E, D)
    baseline = LinearFeatureBaseline()
    values = baseline.fit_predict_per_task(observations, returns, masks)
    assert values.shape == returns.shape
    assert baseline.weight is None  # the batched helper keeps no state
    for task in range(n_tasks):
        separate = LinearFeatureBaseline()
        separate.fit(observations[:, task], returns[:, task], masks[:, task])
        expected = separate.predict(observations[:, task], masks[:, task])
        torch.testing.assert_close(values[:, task], expected, rtol=1e-7, atol=1e-9)


def test_ridge_solves_batched_systems_independently() -> None:
    # System 1 has no data at all (every row padding): its regularised solution is w = 0, and
    # it must not disturb system 0.
    features = torch.zeros(2, 5, 3, dtype=torch.float64)
    features[0] = torch.randn(5, 3, dtype=torch.float64)
    targets = torch.randn(2, 5, dtype=torch.float64)
    weights = ridge_fit(features, targets)
    torch.testing.assert_close(weights[1], torch.zeros(3, dtype=torch.float64))
    expected = _numpy_ridge(features[0].numpy(), targets[0].numpy(), 1e-5)
    np.testing.assert_allclose(weights[0].numpy(), expected, rtol=1e-6)


def test_ridge_raises_when_every_try_fails() -> None:
    features = torch.full((4, 2), float("inf"), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no finite solution"):
        ridge_fit(features, torch.ones(4, dtype=torch.float64))


def test_ridge_retries_with_larger_coefficient(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the first solve report failure for system 1 and check it is re-solved with reg * 10.
    real_solve_ex = torch.linalg.solve_ex
    regs: list[float] = []

    def flaky_solve_ex(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regs.append(float(a[1, 0, 0] - gram[1, 0, 0]))
        solution, info = real_solve_ex(a, b)
        if len(regs) == 1:
            info = info.clone()
            info[1] = 1
        return solution, info

    features = torch.randn(2, 6, 3, dtype=torch.float64)
    targets = torch.randn(2, 6, dtype=torch.float64)
    gram = features.transpose(-1, -2) @ features
    monkeypatch.setattr(torch.linalg, "solve_ex", flaky_solve_ex)
    weights = ridge_fit(features, targets, reg_coeff=1e-3)
    assert regs == pytest.approx([1e-3, 1e-2])
    np.testing.assert_allclose(
        weights[0].numpy(), _numpy_ridge(features[0].numpy(), targets[0].numpy(), 1e-3)
    )
    np.testing.assert_allclose(
        weights[1].numpy(), _numpy_ridge(features[1].numpy(), targets[1].numpy(), 1e-2)
    )


def test_bad_shapes_raise() -> None:
    observations, returns, masks = _episodes(0)
    baseline = LinearFeatureBaseline()
    with pytest.raises(RuntimeError):
        baseline.predict(observations, masks)
    with pytest.raises(ValueError, match="returns"):
        baseline.fit(observations, returns[:-1], masks)
    with pytest.raises(ValueError, match="masks"):
        baseline.fit(observations, returns, masks[:, :-1])
    with pytest.raises(ValueError, match="observations"):
        baseline.fit_predict_per_task(observations, returns, masks)
    baseline.fit(observations, returns, masks)
    with pytest.raises(ValueError, match="dims"):
        baseline.predict(observations[..., :2], masks)
