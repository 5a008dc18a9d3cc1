"""The MAML core against independent references: closed forms and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metarl.core import (
    MLP,
    InnerStepSize,
    adapt,
    expand_to_tasks,
    get_params,
    inner_step,
    single_forward,
    task_forward,
    use_batch_statistics,
)


@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_second_order_matches_closed_form_linear_regression():
    """f(x) = w·x, L(w) = mean((Xw - y)^2): meta-gradient = (I - αH_s) ∇L_q(w')."""
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(8, 3)), rng.normal(size=8)
    xq, yq = rng.normal(size=(6, 3)), rng.normal(size=6)
    w0, alpha = rng.normal(size=3), 0.1
    grad_s = 2 / 8 * xs.T @ (xs @ w0 - ys)
    hess_s = 2 / 8 * xs.T @ xs
    w1 = w0 - alpha * grad_s
    expected = (np.eye(3) - alpha * hess_s) @ (2 / 6 * xq.T @ (xq @ w1 - yq))

    w = torch.tensor(w0, requires_grad=True)
    t = {k: torch.tensor(v) for k, v in dict(xs=xs, ys=ys, xq=xq, yq=yq).items()}
    fast = adapt(lambda p: ((t["xs"] @ p["w"] - t["ys"]) ** 2).mean(), {"w": w}, alpha)
    (meta_grad,) = torch.autograd.grad(((t["xq"] @ fast["w"] - t["yq"]) ** 2).mean(), w)
    np.testing.assert_allclose(meta_grad.numpy(), expected, rtol=1e-10)


def _mlp_problem(seed: int = 0):
    torch.manual_seed(seed)
    model = MLP((2, 8, 8, 1), "tanh")
    xs, ys = torch.randn(5, 2), torch.randn(5, 1)
    xq, yq = torch.randn(7, 2), torch.randn(7, 1)

    def meta_loss(params, mode="second_order", steps=2, eps=1e-3):
        fast = adapt(
            lambda p: ((single_forward(model, p, xs) - ys) ** 2).mean(),
            params,
            [0.3, 0.2],
            steps=steps,
            mode=mode,
            fd_epsilon=eps,
        )
        return ((single_forward(model, fast, xq) - yq) ** 2).mean(), fast

    return model, meta_loss, (xq, yq)


def test_second_order_matches_finite_differences_of_the_meta_loss():
    model, meta_loss, _ = _mlp_problem()
    params = get_params(model)
    loss, _ = meta_loss(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    h = 1e-6
    for (name, p), g in zip(params.items(), grads):
        flat = p.detach().flatten()
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            shifted = []
            for sign in (1, -1):
                q = {n: v.detach().clone() for n, v in params.items()}
                q[name].view(-1)[i] += sign * h
                with torch.enable_grad():
                    shifted.append(meta_loss(q)[0].item())
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            assert g.flatten()[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_first_order_equals_query_gradient_at_adapted_parameters():
    model, meta_loss, (xq, yq) = _mlp_problem()
    params = get_params(model)
    loss, fast = meta_loss(params, mode="first_order")
    fo = torch.autograd.grad(loss, list(params.values()))
    # Independent: the query gradient taken at θ' as fresh leaves.
    leaves = {n: v.detach().requires_grad_(True) for n, v in fast.items()}
    ref = torch.autograd.grad(
        ((single_forward(model, leaves, xq) - yq) ** 2).mean(), list(leaves.values())
    )
    for a, b in zip(fo, ref):
        torch.testing.assert_close(a, b)
    so = torch.autograd.grad(meta_loss(params)[0], list(params.values()))
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(fo, so)), "first order == second?"


def test_finite_difference_mode_converges_to_exact():
    model, meta_loss, _ = _mlp_problem()
    params = get_params(model)
    exact = torch.cat(
        [g.flatten() for g in torch.autograd.grad(meta_loss(params)[0], list(params.values()))]
    )
    errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        fd = torch.autograd.grad(
            meta_loss(params, "finite_difference", eps=eps)[0], list(params.values())
        )
        errors.append((torch.cat([g.flatten() for g in fd]) - exact).norm().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6 * exact.norm().item() + 1e-9


@pytest.mark.parametrize("mode", ["second_order", "first_order", "finite_difference"])
@pytest.mark.parametrize("native", [True, False])
def test_task_batch_equals_per_task_loop(mode, native):
    torch.manual_seed(1)
    native_model = MLP((1, 6, 6, 1))
    plain = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1))
    plain.load_state_dict(native_model.state_dict())
    model = native_model if native else plain
    n_tasks = 4
    xs, ys = torch.randn(n_tasks, 5, 1), torch.randn(n_tasks, 5, 1)
    xq, yq = torch.randn(n_tasks, 7, 1), torch.randn(n_tasks, 7, 1)
    params = get_params(model)
    # The batch scales ε by the norm of all tasks' vectors, a task alone by its own: the two
    # agree in the exact regime, which a ReLU net reaches with an ε too small to cross a kink.
    eps = 1e-6

    batched = adapt(
        lambda p: ((task_forward(model, p, xs) - ys) ** 2).mean(dim=(1, 2)),
        expand_to_tasks(params, n_tasks),
        0.1,
        steps=2,
        mode=mode,
        fd_epsilon=eps,
    )
    loss_b = ((task_forward(model, batched, xq) - yq) ** 2).mean(dim=(1, 2)).mean()
    grads_b = torch.autograd.grad(loss_b, list(params.values()))

    loss_l = 0.0
    for i in range(n_tasks):
        fast = adapt(
            lambda p, i=i: ((single_forward(model, p, xs[i]) - ys[i]) ** 2).mean(),
            params,
            0.1,
            steps=2,
            mode=mode,
            fd_epsilon=eps,
        )
        loss_l = loss_l + ((single_forward(model, fast, xq[i]) - yq[i]) ** 2).mean() / n_tasks
    grads_l = torch.autograd.grad(loss_l, list(params.values()))
    torch.testing.assert_close(loss_b, loss_l)
    for a, b in zip(grads_b, grads_l):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("granularity", ["global", "tensor", "element"])
@pytest.mark.parametrize("mode", ["second_order", "finite_difference"])
def test_learnable_step_size_gradient_matches_finite_differences(granularity, mode):
    model, _, (xq, yq) = _mlp_problem()
    torch.manual_seed(2)
    xs, ys = torch.randn(5, 2), torch.randn(5, 1)
    params = {n: p.detach() for n, p in get_params(model).items()}
    alpha = InnerStepSize([0.3, 0.2], params, learnable=True, granularity=granularity)

    def meta_loss():
        fast = adapt(
            lambda p: ((single_forward(model, p, xs) - ys) ** 2).mean(), params, alpha, 2, mode
        )
        return ((single_forward(model, fast, xq) - yq) ** 2).mean()

    grads = torch.autograd.grad(meta_loss(), list(alpha.values.values()))
    h = 1e-6
    # every step size of both steps (element-wise: the first and the last entry of each tensor)
    for (key, value), g in zip(alpha.values.items(), grads):
        for i in sorted({0, value.numel() - 1}):
            with torch.no_grad():
                value.view(-1)[i] += h
            up = meta_loss().item()
            with torch.no_grad():
                value.view(-1)[i] -= 2 * h
            down = meta_loss().item()
            with torch.no_grad():
                value.view(-1)[i] += h
            expected = (up - down) / (2 * h)
            assert g.flatten()[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-8), (key, i)


def test_step_size_schedule_and_validation():
    alpha = InnerStepSize([0.4, 0.1])
    assert alpha(0, "w") == 0.4 and alpha(1, "w") == 0.1 and alpha(5, "w") == 0.1
    with pytest.raises(ValueError, match=">= 0"):
        InnerStepSize(-1.0)
    with pytest.raises(ValueError, match="needs `params`"):
        InnerStepSize(0.1, learnable=True, granularity="element")
    per_element = InnerStepSize(
        0.1, {"w": torch.zeros(3, 2)}, learnable=True, granularity="element"
    )
    assert per_element(0, "w").shape == (3, 2)


def test_batch_norm_uses_batch_statistics_and_batches_like_a_loop():
    torch.manual_seed(3)
    model = use_batch_statistics(
        nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    )
    assert not list(model.buffers()), "running statistics should be gone"
    params = get_params(model)
    xs, ys = torch.randn(3, 6, 2), torch.randn(3, 6, 1)
    batched = adapt(
        lambda p: ((task_forward(model, p, xs) - ys) ** 2).mean(dim=(1, 2)),
        expand_to_tasks(params, 3),
        0.1,
    )
    for i in range(3):
        fast = adapt(
            lambda p, i=i: ((single_forward(model, p, xs[i]) - ys[i]) ** 2).mean(), params, 0.1
        )
        for name in params:
            torch.testing.assert_close(batched[name][i], fast[name])
    # Batch statistics: each task's output is normalised over its own examples only, written
    # out by hand (biased variance, eps 1e-5), and differs from normalising all tasks pooled.
    out = task_forward(model, expand_to_tasks(params, 3), xs)
    assert out.shape == (3, 6, 1)
    lin1, bn, _, lin2 = model

    def by_hand(x, stats_from):
        h, ref = lin1(x), lin1(stats_from)
        mean, var = ref.mean(0), ref.var(0, unbiased=False)
        return lin2(torch.relu((h - mean) / torch.sqrt(var + 1e-5) * bn.weight + bn.bias))

    with torch.no_grad():
        for i in range(3):
            torch.testing.assert_close(out[i], by_hand(xs[i], xs[i]))
        pooled = by_hand(xs[0], xs.reshape(-1, 2))
        assert (out[0] - pooled).abs().max() > 1e-3


def test_module_buffers_are_passed_through_unchanged():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)
            self.register_buffer("scale", torch.tensor(3.0))

        def forward(self, x):
            return self.lin(x) * self.scale

    model = Scaled()
    params = get_params(model)
    x = torch.randn(2, 4, 2)
    out = task_forward(model, expand_to_tasks(params, 2), x)
    torch.testing.assert_close(out, model(x))
    assert model.scale.item() == 3.0


def test_clear_errors():
    model = MLP((1, 3, 1))
    params = get_params(model)
    x = torch.randn(4, 1)
    loss = lambda p: single_forward(model, p, x).pow(2).mean()  # noqa: E731
    with pytest.raises(ValueError, match="mode must be one of"):
        inner_step(loss, params, 0.1, mode="third_order")  # type: ignore[arg-type]
    with torch.no_grad(), pytest.raises(RuntimeError, match="no_grad"):
        inner_step(loss, params, 0.1)
    with pytest.raises(FloatingPointError, match="not finite"):
        inner_step(lambda p: loss(p) * float("nan"), params, 0.1)
    with pytest.raises(ValueError, match="tasks"):
        task_forward(model, expand_to_tasks(params, 2), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match="MLP sizes"):
        MLP((1,))


def _relu_meta_gradient(model, params, xs, ys, xq, yq, mode, eps=1e-2):
    fast = adapt(
        lambda p: ((single_forward(model, p, xs) - ys) ** 2).mean(), params, 0.1, 1, mode, eps
    )
    loss = ((single_forward(model, fast, xq) - yq) ** 2).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])


def test_finite_difference_mode_on_relu_is_exact_away_from_the_kinks():
    """A small ε rarely reaches a kink: then the central difference of the (piecewise linear)
    gradients is the exact Hessian product, which autograd computes with ReLU'' = 0."""
    torch.manual_seed(3)
    model = MLP((1, 16, 16, 1), "relu")
    params = get_params(model)
    xs, ys, xq, yq = torch.randn(5, 1), torch.randn(5, 1), torch.randn(7, 1), torch.randn(7, 1)
    exact = _relu_meta_gradient(model, params, xs, ys, xq, yq, "second_order")
    fd = _relu_meta_gradient(model, params, xs, ys, xq, yq, "finite_difference", eps=1e-7)
    assert float((fd - exact).norm() / exact.norm()) < 1e-6


def test_finite_difference_mode_on_relu_breaks_where_the_units_sit_on_their_kinks():
    """The documented failure (docs/numerics.md): zero biases and a zero input put every unit
    exactly on its kink, as 2D navigation's first observation does at initialisation; then
    any perturbation switches units and the difference quotient is not the Hessian product."""
    torch.manual_seed(0)
    model = MLP((2, 16, 16, 1), "relu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    params = get_params(model)
    xs, ys = torch.zeros(4, 2), torch.randn(4, 1)  # every support input at the origin
    xq, yq = torch.randn(6, 2), torch.randn(6, 1)
    exact = _relu_meta_gradient(model, params, xs, ys, xq, yq, "second_order")
    for eps in (1e-1, 1e-3, 1e-5, 1e-7):
        fd = _relu_meta_gradient(model, params, xs, ys, xq, yq, "finite_difference", eps=eps)
        assert float((fd - exact).norm() / exact.norm()) > 1e-2, eps
    smooth = MLP((2, 16, 16, 1), "tanh")  # the same layout with a smooth unit is fine
    params = get_params(smooth)
    exact = _relu_meta_gradient(smooth, params, xs, ys, xq, yq, "second_order")
    fd = _relu_meta_gradient(smooth, params, xs, ys, xq, yq, "finite_difference", eps=1e-4)
    assert float((fd - exact).norm() / exact.norm()) < 1e-6


def test_batchnorm_with_running_statistics_names_the_fix_and_the_fix_works():
    from metarl.core import expand_to_tasks, get_params, task_forward, use_batch_statistics

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    params = expand_to_tasks(get_params(model), 2)
    x = torch.randn(2, 5, 3)
    with pytest.raises(RuntimeError, match=r"use_batch_statistics\(model\)"):
        task_forward(model, params, x)
    use_batch_statistics(model)
    out = task_forward(model, params, x)
    # each task normalised with its own batch: the same as the module on that task alone
    for i in range(2):
        torch.testing.assert_close(out[i], model(x[i]))


def test_an_input_with_another_number_of_tasks_is_named():
    from metarl.core import expand_to_tasks, get_params, task_forward

    model = torch.nn.Linear(1, 1)
    params = expand_to_tasks(get_params(model), 4)
    with pytest.raises(ValueError, match=r"carry 4 tasks but input 0 has shape \(3, 10, 1\)"):
        task_forward(model, params, torch.randn(3, 10, 1))
