"""TRPO pieces against independent references: explicit Hessians, the KL bound, NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from metarl.core import get_params
from metarl.core.conjugate_gradient import conjugate_gradient
from metarl.rl import maml_trpo
from metarl.rl.config import FISHER_PRODUCTS, RLConfig
from metarl.rl.diagnostics import (
    check_gradient_agreement,
    check_meta_gradient_agreement,
    gradient_cosines,
    profile_natural_step,
    task_gradients,
)
from metarl.rl.episodes import Episodes
from metarl.rl.fisher import finite_difference_fvp, fisher_vector_product, gauss_newton_fvp
from metarl.rl.maml import meta_objective
from metarl.rl.policy import GaussianMLPPolicy, detach_distribution
from metarl.rl.trpo import (
    KL_MARGIN,
    LINE_SEARCH_RULES,
    flatten,
    line_search,
    trust_region_step,
    unflatten,
)

N_TASKS, HORIZON, EPISODES = 2, 4, 3


def _episodes(gen: torch.Generator, lengths: list[int]) -> Episodes:
    """Random float64 episodes with advantages; episode e of every task lasts lengths[e] steps."""
    shape = (HORIZON, N_TASKS, EPISODES)
    masks = torch.zeros(shape, dtype=torch.float64)
    for e, length in enumerate(lengths):
        masks[:length, :, e] = 1.0
    return Episodes(
        observations=torch.randn(*shape, 2, generator=gen, dtype=torch.float64),
        actions=torch.randn(*shape, 2, generator=gen, dtype=torch.float64),
        rewards=torch.randn(shape, generator=gen, dtype=torch.float64) * masks,
        masks=masks,
        returns=torch.zeros(shape, dtype=torch.float64),
        advantages=torch.randn(shape, generator=gen, dtype=torch.float64) * masks,
    )


@pytest.fixture()
def problem() -> tuple[GaussianMLPPolicy, Episodes, Episodes]:
    """A tiny tanh policy (the Hessian is fully non-trivial) and random support/query episodes."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=[3], activation="tanh", init_std=0.7).double()
    gen = torch.Generator().manual_seed(1)
    return policy, _episodes(gen, [4, 2, 3]), _episodes(gen, [3, 4, 1])


def _kl_of_flat(policy: GaussianMLPPolicy, support: Episodes, query: Episodes, alpha: float):
    """flat θ ↦ mean KL(π_θ'_old || π_θ'(θ)) on the query, with the old policy fixed at θ_0."""
    theta = get_params(policy)
    old = detach_distribution(meta_objective(policy, theta, [support], query, alpha).query_policy)

    def kl(flat: torch.Tensor) -> torch.Tensor:
        return meta_objective(
            policy, unflatten(flat, theta), [support], query, alpha, old
        ).kls.mean()

    return kl


def test_fisher_vector_product_equals_explicit_hessian_through_adaptation(problem) -> None:
    policy, support, query = problem
    theta = get_params(policy)
    theta0 = flatten(p.detach() for p in theta.values())
    kl_fn = _kl_of_flat(policy, support, query, alpha=0.5)
    hessian = torch.autograd.functional.hessian(kl_fn, theta0)

    kl = meta_objective(policy, theta, [support], query, 0.5).kls.mean()
    fvp = fisher_vector_product(kl, list(theta.values()), damping=0.0)
    columns = torch.stack([fvp(e) for e in torch.eye(theta0.numel(), dtype=torch.float64)], dim=1)
    torch.testing.assert_close(columns, hessian, rtol=1e-8, atol=1e-10)
    # The adaptation matters: without it (α = 0) the Hessian is a different matrix.
    plain = torch.autograd.functional.hessian(_kl_of_flat(policy, support, query, 0.0), theta0)
    assert (plain - hessian).abs().max() > 1e-3

    damped = fisher_vector_product(kl, list(theta.values()), damping=0.1)
    v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(damped(v), hessian @ v + 0.1 * v)


@pytest.mark.parametrize(
    ("activation", "inner_steps", "mode"),
    [
        ("tanh", 1, "second_order"),
        ("relu", 2, "second_order"),
        ("tanh", 2, "second_order"),
        ("tanh", 2, "first_order"),
    ],
)
def test_gauss_newton_fvp_equals_the_double_backward_one(
    activation: str, inner_steps: int, mode: str
) -> None:
    # Two hidden layers (the weights of one layer meet those of the next in the Hessian), one
    # or two inner steps (A = (I − αH₂)(I − αH₁) is not symmetric), a σ floor that binds.
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, [3, 4], activation, init_std=0.7, min_std=0.69).double()
    with torch.no_grad():
        policy.log_std[0] = -1.0  # below the floor: clamped, no gradient
    gen = torch.Generator().manual_seed(1)
    support = [_episodes(gen, [4, 2, 3]) for _ in range(inner_steps)]
    query = _episodes(gen, [3, 4, 1])
    for episodes in (*support, query):  # tasks of different lengths: per-task means matter
        episodes.masks[2:, 1, :] = 0.0
    alpha = [0.5, 0.2][:inner_steps]  # a step-size schedule: each step its own α
    theta = get_params(policy)
    kl = meta_objective(policy, theta, support, query, alpha, mode=mode).kls.mean()  # type: ignore[arg-type]
    reference = fisher_vector_product(kl, list(theta.values()), damping=0.1)
    fvp = gauss_newton_fvp(policy, theta, support, query, alpha, damping=0.1, mode=mode)  # type: ignore[arg-type]
    n = sum(p.numel() for p in theta.values())
    for v in torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(5)):
        torch.testing.assert_close(fvp(v), reference(v), rtol=1e-9, atol=1e-11)
    # θ itself is not touched.
    assert all(p.grad is None for p in theta.values())
    with pytest.raises(ValueError, match="mode must be"):
        gauss_newton_fvp(policy, theta, support, query, alpha, mode="second-order")  # type: ignore[arg-type]


def test_gauss_newton_fvp_equals_explicit_hessian(problem) -> None:
    policy, support, query = problem
    theta = get_params(policy)
    theta0 = flatten(p.detach() for p in theta.values())
    hessian = torch.autograd.functional.hessian(
        _kl_of_flat(policy, support, query, alpha=0.5), theta0
    )
    fvp = gauss_newton_fvp(policy, theta, [support], query, 0.5)
    columns = torch.stack([fvp(e) for e in torch.eye(theta0.numel(), dtype=torch.float64)], dim=1)
    torch.testing.assert_close(columns, hessian, rtol=1e-8, atol=1e-10)


def test_finite_difference_fvp_matches_hessian(problem) -> None:
    policy, support, query = problem
    theta = get_params(policy)
    theta0 = flatten(p.detach() for p in theta.values())
    kl_fn = _kl_of_flat(policy, support, query, alpha=0.5)
    hessian = torch.autograd.functional.hessian(kl_fn, theta0)

    def kl_gradient(flat: torch.Tensor) -> torch.Tensor:
        flat = flat.clone().requires_grad_(True)
        return torch.autograd.grad(kl_fn(flat), flat)[0]

    fvp = finite_difference_fvp(kl_gradient, theta0, damping=0.0, epsilon=1e-4)
    v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-5, atol=1e-8)


def test_trust_region_step_reaches_max_kl_under_the_quadratic_model() -> None:
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    step = trust_region_step(torch.tensor([1.0, -2.0], dtype=torch.float64), lambda v: a @ v, 0.01)
    assert 0.5 * float(step @ a @ step) == pytest.approx(0.01)
    bad = trust_region_step(torch.ones(2), lambda v: torch.full_like(v, math.nan), 0.01)
    assert bool(torch.isnan(bad).all())


def test_trpo_models_predict_the_objective_of_a_smooth_policy(problem) -> None:
    # Values only, no autograd second derivative: along the trainer's natural step s the KL
    # reached is ½ f² sᵀFs = f² max_kl and the loss change −f gᵀs, up to O(f³) and O(f²).
    # (With ReLU units and many samples the KL is not: see metarl.rl.diagnostics.)
    policy, support, query = problem
    config = RLConfig(inner_lr=0.5, max_kl=0.01, cg_damping=0.0)
    fractions = (0.1, 0.03, 0.01)
    points = profile_natural_step(policy, get_params(policy), [support], query, config, fractions)
    for point in points:
        f = point.fraction
        assert point.kl == pytest.approx(point.model_kl, rel=0.2 * f)
        assert point.loss_change == pytest.approx(point.model_loss_change, rel=f)
        assert point.loss_change < 0.0
    nan_query = query._replace(advantages=torch.full_like(query.advantages, math.nan))
    with pytest.raises(FloatingPointError, match="the natural step is not finite"):
        profile_natural_step(policy, get_params(policy), [support], nan_query, config)


# --- The trainer's Fisher-vector products against the exact Hessian of the meta-KL ----------


def _reference_meta_kl(
    policy: GaussianMLPPolicy, support: list[Episodes], query: Episodes, alpha: float, every: int
):
    """flat θ ↦ the KL whose Hessian at θ_0 natural_step's Fisher product is, written without
    metarl.rl.maml, losses or fisher: on episodes 0, k, 2k, ... of every task (support and query
    alike, k = ``every``), each task takes one plain gradient step per support batch on its
    REINFORCE loss −Σ log π(a|s)·A·mask / Σ mask (torch.distributions on the module's own
    forward), then KL(π_old || π_θ'(θ)) per query step, its mean over the task's valid steps,
    the mean over tasks. π_old is the adapted policy at θ_0 (the policy's parameters), fixed."""
    theta = get_params(policy)

    def pick(x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::every]

    def adapted(flat: torch.Tensor, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not flat.requires_grad:  # a plain evaluation: the inner step still needs a graph
            flat = flat.detach().requires_grad_(True)
        params = unflatten(flat, theta)
        for episodes in support:
            mean, log_std = functional_call(policy, params, (pick(episodes.observations)[:, task],))
            log_prob = Normal(mean, log_std.exp()).log_prob(pick(episodes.actions)[:, task])
            mask = pick(episodes.masks)[:, task]
            advantages = pick(episodes.advantages)[:, task]
            loss = -(log_prob.sum(-1) * advantages * mask).sum() / mask.sum()
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {name: p - alpha * g for (name, p), g in zip(params.items(), grads)}
        return functional_call(policy, params, (pick(query.observations)[:, task],))

    theta0 = flatten(p.detach() for p in theta.values())
    old = [[t.detach() for t in adapted(theta0, i)] for i in range(query.n_tasks)]

    def kl(flat: torch.Tensor) -> torch.Tensor:
        per_task = []
        for i, (old_mean, old_log_std) in enumerate(old):
            mean, log_std = adapted(flat, i)
            kls = kl_divergence(Normal(old_mean, old_log_std.exp()), Normal(mean, log_std.exp()))
            mask = pick(query.masks)[:, i]
            per_task.append((kls.sum(-1) * mask).sum() / mask.sum())
        return torch.stack(per_task).mean()

    return kl


def _trainer_fisher_product(monkeypatch, policy, support, query, config):
    """natural_step at θ = the policy's parameters (what maml_trpo.meta_update, the trainer's
    update, runs first), and the Fisher-vector product it hands to conjugate gradient."""
    products = []

    def recording(matvec, b, iterations=10, residual_tol=1e-10):
        products.append(matvec)
        return conjugate_gradient(matvec, b, iterations, residual_tol)

    monkeypatch.setattr(maml_trpo, "conjugate_gradient", recording)
    step = maml_trpo.natural_step(policy, get_params(policy), support, query, config)
    assert len(products) == 1
    return products[0], step


@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("subsample", [1, 2])
@pytest.mark.parametrize("fisher_product", FISHER_PRODUCTS)
def test_trainer_fisher_product_is_the_hessian_of_the_meta_kl(
    problem, monkeypatch, fisher_product: str, subsample: int, inner_steps: int
) -> None:
    """The product natural_step uses for each ``fisher_product`` and ``fisher_subsample``
    equals (F + λI)v, F the float64 Hessian (autograd.functional.hessian) at θ_0 of the
    meta-KL of :func:`_reference_meta_kl` on the same every-k-th episodes."""
    policy, first_support, query = problem
    query.masks[2:, 1, :] = 0.0  # task 1's query episodes are shorter: per-task means matter
    support = [first_support, _episodes(torch.Generator().manual_seed(2), [2, 4, 3])]
    support = support[:inner_steps]
    alpha, damping, fd_epsilon = 0.5, 0.05, 1e-2
    config = RLConfig(
        inner_lr=alpha, inner_steps=inner_steps, episodes_per_task=EPISODES, cg_damping=damping,
        fisher_product=fisher_product, fisher_subsample=subsample, fd_epsilon=fd_epsilon,
        cg_iterations=50,
    )  # fmt: skip
    theta0 = flatten(p.detach() for p in policy.parameters())
    kl = _reference_meta_kl(policy, support, query, alpha, subsample)
    hessian = torch.autograd.functional.hessian(kl, theta0)
    # At θ_0 the new policy is the old one: the KL and its gradient vanish. This is why the
    # Gauss-Newton form Jᵀ M J (which drops Σ ∂KL/∂y · ∇²y, y = (μ, log σ)) is the Hessian.
    assert float(kl(theta0).detach()) == 0.0
    assert float(torch.autograd.functional.jacobian(kl, theta0).abs().max()) < 1e-14
    if subsample > 1:  # the subsample's Fisher is another matrix: the test can tell them apart
        full = torch.autograd.functional.hessian(
            _reference_meta_kl(policy, support, query, alpha, 1), theta0
        )
        assert float((full - hessian).norm()) > 0.1 * float(hessian.norm())

    fvp, step = _trainer_fisher_product(monkeypatch, policy, support, query, config)
    v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    v = 3.0 * v / v.norm()  # ‖v‖ ≠ 1: the finite-difference step must not scale with ‖v‖
    expected = hessian @ v + damping * v
    product = fvp(v)
    if fisher_product == "finite_difference":
        # [∇KL(θ_0 + εv) − ∇KL(θ_0 − εv)] / 2ε with ε = fd_epsilon/‖v‖ is Hv plus, by Taylor,
        # (ε²/6) ∇⁴KL[v, v, v, ·] = (fd_epsilon²/6) ‖v‖ ∇⁴KL[u, u, u, ·] (u = v/‖v‖), plus
        # O(ε⁴): that leading term, by autograd, must account for the error to O(fd_epsilon²)
        # of itself (measured ≤ 2e-4 of it; 1% allowed).
        u = v / v.norm()
        x = theta0.clone().requires_grad_(True)
        derivative = kl(x)
        for _ in range(3):
            derivative = torch.autograd.grad(derivative, x, create_graph=True)[0] @ u
        fourth = torch.autograd.grad(derivative, x)[0]
        leading = fd_epsilon**2 / 6.0 * v.norm() * fourth
        assert float(leading.norm()) > 0.0
        assert float((product - expected - leading).norm()) < 0.01 * float(leading.norm())
    else:
        # double_backward is the Hessian itself and Gauss-Newton equals it at θ_0 (above): both
        # to float64 round-off.
        torch.testing.assert_close(product, expected, rtol=1e-9, atol=1e-11)

    # The step the trainer takes is the natural step of that matrix: d = (F + λI)⁻¹ g scaled to
    # ½ sᵀ(F + λI)s = max_kl; 1e-3 of |s| for conjugate gradient, which stops at |r|² < 1e-10
    # (measured ≤ 1e-4). Not for finite differences: their O(ε²) product error is amplified by
    # the condition number of F + λI (up to 7e3 here), which no ε-derived bound keeps tight.
    if fisher_product != "finite_difference":
        matrix = hessian + damping * torch.eye(theta0.numel(), dtype=torch.float64)
        direction = torch.linalg.solve(matrix, step.grad)
        natural = direction * math.sqrt(2.0 * config.max_kl / float(direction @ matrix @ direction))
        assert float((step.full_step - natural).norm()) < 1e-3 * float(natural.norm())


@pytest.mark.parametrize("rule", LINE_SEARCH_RULES)
def test_accepted_trpo_step_satisfies_the_kl_bound(problem, rule: str) -> None:
    policy, support, query = problem
    theta = get_params(policy)
    objective = meta_objective(policy, theta, [support], query, 0.5)
    loss, kl = objective.losses.mean(), objective.kls.mean()
    loss_before = float(loss.detach())
    old = detach_distribution(objective.query_policy)
    grad = flatten(torch.autograd.grad(loss, list(theta.values()), retain_graph=True))
    fvp = fisher_vector_product(kl, list(theta.values()), damping=1e-5)
    max_kl = 1e-3
    # Twice the natural step: the quadratic model overshoots, so backtracking must engage.
    full_step = 2.0 * trust_region_step(conjugate_gradient(fvp, grad, 10), fvp, max_kl)
    theta0 = flatten(p.detach() for p in theta.values())

    def evaluate(flat: torch.Tensor) -> tuple[float, float]:
        at = meta_objective(policy, unflatten(flat, theta), [support], query, 0.5, old)
        return float(at.losses.detach().mean()), float(at.kls.detach().mean())

    result = line_search(evaluate, theta0, full_step, loss_before, max_kl, 0.8, 15, rule)
    assert result.accepted and result.steps > 1
    loss_after, kl_after = evaluate(result.params)
    assert kl_after <= max_kl and kl_after == pytest.approx(result.kl)
    assert loss_after < loss_before and loss_after == pytest.approx(result.loss_after)
    assert torch.allclose(result.params, theta0 - result.step_fraction * full_step)
    if rule == "backtrack":
        assert result.step_fraction == pytest.approx(0.8 ** (result.steps - 1))


def test_line_search_rejects_nan_and_keeps_theta() -> None:
    theta = torch.tensor([1.0, 2.0])
    calls = []

    def nan_loss(flat: torch.Tensor) -> tuple[float, float]:
        calls.append(flat)
        return math.nan, 0.0

    def nan_kl(flat: torch.Tensor) -> tuple[float, float]:
        return -1.0, math.nan

    for evaluate in (nan_loss, nan_kl):
        result = line_search(evaluate, theta, torch.ones(2), 0.0, 0.01, 0.8, 5)
        assert not result.accepted and result.steps == 5
        assert result.params is theta and torch.equal(theta, torch.tensor([1.0, 2.0]))
        assert result.loss_after == result.loss_before and result.kl == 0.0
    assert len(calls) == 5
    # A NaN step or a NaN starting loss is rejected without evaluating anything.
    for step, before in ((torch.tensor([math.nan, 0.0]), 0.0), (torch.ones(2), math.nan)):
        result = line_search(nan_loss, theta, step, before, 0.01)
        assert not result.accepted and result.steps == 0 and result.params is theta
    assert len(calls) == 5


def test_line_search_takes_the_first_improving_step_within_the_trust_region() -> None:
    # loss(θ) = θ², KL(θ) = (θ - 1)²: from θ = 1, the full step to θ = -1 breaks KL ≤ 0.5,
    # 0.5 · step gives θ = 0 (KL 1, still too far), 0.25 · step gives θ = 0.5 (KL 0.25): taken.
    def evaluate(flat: torch.Tensor) -> tuple[float, float]:
        x = float(flat[0])
        return x * x, (x - 1.0) ** 2

    result = line_search(evaluate, torch.tensor([1.0]), torch.tensor([2.0]), 1.0, 0.5, 0.5, 10)
    assert result.accepted and result.steps == 3 and result.step_fraction == 0.25
    assert float(result.params[0]) == pytest.approx(0.5)


def test_measured_kl_rule_jumps_to_the_trust_region_edge_the_kl_implies() -> None:
    # loss(f) = -f and KL(f) = 25 δ f² along the step: the quadratic model said f = 1 gives δ,
    # the real KL is 25x that. The edge is f = 0.2; the rule aims at 0.95 of it in one jump,
    # where shrinking by β = 0.8 takes eight (0.8⁸ = 0.168 ≤ 0.2 < 0.8⁷ = 0.21).
    max_kl, c = 0.01, 25 * 0.01
    theta, step = torch.tensor([0.0]), torch.tensor([-1.0])  # θ − f·step = f

    def evaluate(flat: torch.Tensor) -> tuple[float, float]:
        f = float(flat[0])
        return -f, c * f * f

    measured = line_search(evaluate, theta, step, 0.0, max_kl, 0.8, 15, rule="measured_kl")
    assert measured.accepted and measured.steps == 2
    assert measured.step_fraction == pytest.approx(KL_MARGIN * math.sqrt(max_kl / c))
    assert measured.kl == pytest.approx(KL_MARGIN**2 * max_kl)
    backtrack = line_search(evaluate, theta, step, 0.0, max_kl, 0.8, 15)
    assert backtrack.accepted and backtrack.steps == 9
    assert backtrack.step_fraction == pytest.approx(0.8**8)
    assert measured.loss_after < backtrack.loss_after  # nearer the edge: a longer step


def test_measured_kl_rule_backtracks_by_ratio_when_the_loss_rejects() -> None:
    # The KL is tiny everywhere but the loss only falls for f < 0.3: the KL says nothing about
    # where to go, so both rules take the same β-steps.
    def evaluate(flat: torch.Tensor) -> tuple[float, float]:
        f = float(flat[0])
        return (f - 0.3), 1e-6 * f * f

    theta, step = torch.tensor([0.0]), torch.tensor([-1.0])
    results = [line_search(evaluate, theta, step, 0.0, 0.01, 0.5, 10, rule=rule)
               for rule in LINE_SEARCH_RULES]  # fmt: skip
    assert all(r.accepted and r.steps == 3 and r.step_fraction == 0.25 for r in results)
    # A KL barely over δ still shrinks by at least β.
    result = line_search(lambda f: (-float(f[0]), 0.0101 * float(f[0]) ** 2), theta, step, 0.0,
                         0.01, 0.5, 10, rule="measured_kl")  # fmt: skip
    assert result.steps == 2 and result.step_fraction == 0.5
    with pytest.raises(ValueError, match="line search rule"):
        line_search(evaluate, theta, step, 0.0, 0.01, rule="exact")


def test_task_gradients_equal_a_per_task_loop_of_the_reinforce_loss(problem) -> None:
    """Each row is the gradient of −mean log π(a|s)·A over that task's valid steps alone,
    written here with torch.distributions on the module's own parameters."""
    policy, support, _ = problem
    rows = task_gradients(policy, get_params(policy), support)
    for i in range(N_TASKS):
        mask = support.masks[:, i]
        mean, log_std = policy(support.observations[:, i])
        log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(support.actions[:, i])
        loss = -(log_prob.sum(-1) * support.advantages[:, i] * mask).sum() / mask.sum()
        expected = torch.autograd.grad(loss, list(policy.parameters()))
        names = [name for name, _ in policy.named_parameters()]
        assert names == list(get_params(policy))  # the rows follow the parameters' order
        torch.testing.assert_close(rows[i], torch.cat([g.reshape(-1) for g in expected]))


def test_gradient_agreement_rises_as_more_episodes_average_the_noise_out() -> None:
    """A batch's gradient is the task's plus noise that shrinks as 1/√episodes: two batches of
    80 episodes agree far more than two of 2 (navigation, seeded)."""
    config = RLConfig(hidden_sizes=[16, 16])
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=[16, 16])
    few = check_gradient_agreement(policy, config, n_tasks=6, n_episodes=2, seed=3)
    many = check_gradient_agreement(policy, config, n_tasks=6, n_episodes=80, seed=3)
    assert few.same_task.shape == many.same_task.shape == (6,) and many.episodes == 80
    assert many.same_task.mean() > few.same_task.mean() + 0.3
    again = check_gradient_agreement(policy, config, n_tasks=6, n_episodes=2, seed=3)
    assert again.same_task.tolist() == few.same_task.tolist()  # seeded
    one = check_gradient_agreement(policy, config, n_tasks=1, n_episodes=2, seed=3)
    assert math.isnan(one.other_tasks)
    with pytest.raises(ValueError, match="tasks and episodes must be at least 1"):
        check_gradient_agreement(policy, config, n_tasks=0)


def test_gradient_cosines_pair_each_task_with_itself_and_average_only_different_tasks() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    b = torch.tensor([[5.0, 0.0, 0.0], [0.0, -1.0, 1.0], [1.0, 1.0, 0.0]])
    same = np.eye(3, dtype=bool)
    same[0, 2] = same[2, 0] = True  # tasks 0 and 2 are the same task: their pairs do not count
    within, between = gradient_cosines(a, b, same)
    np.testing.assert_allclose(within, [1.0, -1 / math.sqrt(2), 0.0], atol=1e-7)
    # the pairs left: (0, 1) 0, (1, 0) 0, (1, 2) 1/√2, (2, 1) 1/√2
    assert between == pytest.approx((2 / math.sqrt(2)) / 4)
    assert math.isnan(gradient_cosines(a, b, np.ones((3, 3), dtype=bool))[1])


def test_meta_gradient_agreement_rises_with_the_meta_batch() -> None:
    """Two meta-batches of 20 navigation tasks x 20 episodes give nearly the same meta-gradient;
    two of 2 x 2 do not (seeded), and the same seed gives the same batches."""
    config = RLConfig(hidden_sizes=[16, 16])
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=[16, 16])
    few = check_meta_gradient_agreement(policy, config, n_tasks=2, n_episodes=2, seed=3)
    many = check_meta_gradient_agreement(policy, config, n_tasks=20, n_episodes=20, seed=3)
    assert (many.tasks, many.episodes) == (20, 20)
    assert many.gradient > 0.9 > few.gradient + 0.5
    assert many.natural_step > few.natural_step
    assert check_meta_gradient_agreement(policy, config, 2, 2, seed=3) == few
