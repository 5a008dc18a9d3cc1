"""Conjugate gradient against torch.linalg.solve on random symmetric positive definite systems."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metarl.core.conjugate_gradient import conjugate_gradient


def _spd(n: int, seed: int, condition: float = 10.0) -> torch.Tensor:
    """Random SPD matrix with eigenvalues spread over [1, condition]."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eigenvalues = torch.linspace(1.0, condition, n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T


def test_hand_computed_2x2() -> None:
    # A = [[4, 1], [1, 3]], b = [1, 2]: x = A^{-1} b = [1/11, 7/11]; CG is exact in 2 steps.
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=2)
    torch.testing.assert_close(x, torch.tensor([1 / 11, 7 / 11], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    condition=st.floats(min_value=1.0, max_value=100.0),
)
def test_solves_random_spd_systems(n: int, seed: int, condition: float) -> None:
    a = _spd(n, seed, condition)
    b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    # n iterations are exact in exact arithmetic; 2n absorbs the rounding of ill-conditioned A.
    x = conjugate_gradient(lambda v: a @ v, b, iterations=2 * n, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8)


def test_few_iterations_reduce_the_residual_monotonically_in_a_norm() -> None:
    # CG minimises the A-norm of the error over growing Krylov spaces: it never increases.
    a = _spd(40, seed=3, condition=1000.0)
    b = torch.randn(40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    errors = []
    for iterations in range(0, 15):
        error = conjugate_gradient(lambda v: a @ v, b, iterations=iterations) - exact
        errors.append(float(error @ a @ error))
    pairs = zip(errors, errors[1:], strict=False)
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in pairs)
    assert errors[-1] < 0.1 * errors[0]


def test_float32_with_default_iterations() -> None:
    # The TRPO setting: float32, 10 iterations, a well-conditioned (damped) matrix.
    a = _spd(8, seed=5, condition=5.0).float()
    b = torch.randn(8, generator=torch.Generator().manual_seed(6))
    x = conjugate_gradient(lambda v: a @ v, b)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_zero_rhs_and_no_iteration_give_zero() -> None:
    a = _spd(4, seed=0)
    calls = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        calls.append(v)
        return a @ v

    assert torch.equal(
        conjugate_gradient(matvec, torch.zeros(4, dtype=torch.float64)),
        torch.zeros(4, dtype=torch.float64),
    )
    assert torch.equal(
        conjugate_gradient(matvec, torch.ones(4, dtype=torch.float64), 0),
        torch.zeros(4, dtype=torch.float64),
    )
    assert calls == []


def test_does_not_modify_b() -> None:
    a = _spd(5, seed=1)
    b = torch.randn(5, dtype=torch.float64)
    b_copy = b.clone()
    conjugate_gradient(lambda v: a @ v, b)
    assert torch.equal(b, b_copy)


def test_errors() -> None:
    with pytest.raises(ValueError, match="flat vector"):
        conjugate_gradient(lambda v: v, torch.ones(2, 2))
    with pytest.raises(ValueError, match="positive definite"):
        conjugate_gradient(lambda v: -v, torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        conjugate_gradient(lambda v: v[:-1], torch.ones(3))


def test_batched_conjugate_gradient_solves_each_row_with_its_own_matrix():
    from metarl.core.conjugate_gradient import batched_conjugate_gradient

    gen = torch.Generator().manual_seed(0)
    rows, n = 4, 6
    factors = torch.randn(rows, n, n, generator=gen, dtype=torch.float64)
    matrices = factors @ factors.mT + n * torch.eye(n, dtype=torch.float64)  # SPD, well posed
    b = torch.randn(rows, n, generator=gen, dtype=torch.float64)
    x, residual = batched_conjugate_gradient(
        lambda v: (matrices @ v.unsqueeze(-1)).squeeze(-1), b, iterations=n
    )
    torch.testing.assert_close(x, torch.linalg.solve(matrices, b))
    assert (residual < 1e-10).all()
    # A row whose matrix is indefinite stops at its last iterate; the others still converge.
    matrices[1] = -torch.eye(n, dtype=torch.float64)
    x, _ = batched_conjugate_gradient(
        lambda v: (matrices @ v.unsqueeze(-1)).squeeze(-1), b, iterations=n
    )
    assert torch.equal(x[1], torch.zeros(n, dtype=torch.float64))
    keep = [0, 2, 3]
    torch.testing.assert_close(x[keep], torch.linalg.solve(matrices[keep], b[keep]))
