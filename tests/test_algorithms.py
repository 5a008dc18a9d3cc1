"""The MAML family against independent references: per-task loops, closed forms, finite
differences of the whole objective, and MAML itself where a variant reduces to it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metarl.algorithms import ALGORITHMS, OWN_SETTINGS_BY_ALGORITHM, Problem, make_algorithm
from metarl.algorithms.anil import is_head
from metarl.algorithms.heads import class_means
from metarl.algorithms.imaml import IMAML
from metarl.algorithms.maml import MAML
from metarl.algorithms.maml_plus_plus import msl_weights
from metarl.algorithms.reptile import Reptile
from metarl.config import ConfigError
from metarl.core import MLP, InnerStepSize, TaskBatch, get_params
from metarl.experiments import load_config
from metarl.supervised.conv4 import Conv4
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task, mse_per_task

REGRESSION = Problem(mse_per_task)
CLASSIFICATION = Problem(cross_entropy_per_task, accuracy_per_task, "accuracy")


@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _regression_batch(n_tasks: int = 4, seed: int = 0, inputs: int = 1) -> TaskBatch:
    gen = torch.Generator().manual_seed(seed)
    x = [torch.randn(n_tasks, 6, inputs, generator=gen) for _ in range(2)]
    w = torch.randn(n_tasks, inputs, 1, generator=gen)
    return TaskBatch(x[0], torch.sin(x[0] @ w), x[1], torch.sin(x[1] @ w))


def _classification_batch(n_tasks: int = 3, n_way: int = 3, shots: int = 2) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(n_way).repeat_interleave(shots).repeat(n_tasks, 1)
    images = [torch.rand(n_tasks, n_way * shots, 1, 12, 12, generator=gen) for _ in range(2)]
    return TaskBatch(images[0], labels, images[1], labels)


def _config(name: str, *extra: str):
    base = "sinusoid" if name not in ("proto_maml", "leopard") else "omniglot-5w1s"
    return load_config(base, [f"algorithm={name}", "inner_steps=2", "inner_lr=0.1", *extra])


def _setup(name: str):
    """A small model, its algorithm, a batch and a problem, for every family member."""
    torch.manual_seed(0)
    if name in ("proto_maml", "leopard"):
        model = Conv4(3, 1, 12, filters=4)
        return model, make_algorithm(_config(name), model), _classification_batch(), CLASSIFICATION
    model = MLP((1, 8, 8, 1), "tanh")
    return model, make_algorithm(_config(name), model), _regression_batch(), REGRESSION


def _meta_gradient(algorithm, model, batch, problem, iteration=0) -> torch.Tensor:
    params = [*model.parameters(), *algorithm.parameters()]
    loss = algorithm.meta_loss(model, batch, problem, iteration).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads)])  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_on_a_task_batch_equals_a_per_task_loop(name):
    """One computation for the meta-batch gives the mean of the tasks' own meta-gradients."""
    model, algorithm, batch, problem = _setup(name)
    batched = _meta_gradient(algorithm, model, batch, problem)
    alone = [_meta_gradient(algorithm, model, batch.tasks(i, i + 1), problem)
             for i in range(batch.n_tasks)]  # fmt: skip
    torch.testing.assert_close(batched, torch.stack(alone).mean(dim=0), rtol=1e-6, atol=1e-9)
    assert batched.abs().sum() > 0
    # Test time: every algorithm adapts, the model is untouched, steps are finite.
    before = copy.deepcopy(model.state_dict())
    stages = list(algorithm.adapt_steps(model, batch, problem, 2))
    assert len(stages) == 3 and all(torch.isfinite(p).all() for s in stages for p in s.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_reptile_steps_toward_the_mean_of_the_tasks_adapted_weights(inner):
    """Independent reference: torch.optim.SGD, or torch.optim.Adam with β1 = 0 (fresh moments
    per task), on a copy of the model, task by task; test-time adaptation takes the same steps."""
    torch.manual_seed(2)
    model = MLP((1, 8, 1), "tanh")
    batch = _regression_batch(3)
    algorithm = Reptile(InnerStepSize(0.05), 3, inner)
    theta = [p.detach().clone() for p in model.parameters()]
    grads = torch.autograd.grad(algorithm.meta_loss(model, batch, REGRESSION, 0).loss,
                                list(model.parameters()))  # fmt: skip
    adapted = []
    for i in range(batch.n_tasks):
        net = copy.deepcopy(model)
        optimizer = (
            torch.optim.SGD(net.parameters(), lr=0.05)
            if inner == "sgd"
            else torch.optim.Adam(net.parameters(), lr=0.05, betas=(0.0, 0.999), eps=1e-8)
        )
        for _ in range(3):
            optimizer.zero_grad()
            mse_per_task(net(batch.support_x[i])[None], batch.support_y[i][None]).sum().backward()
            optimizer.step()
        adapted.append([p.detach() for p in net.parameters()])
    for k, (g, t) in enumerate(zip(grads, theta)):
        phi_mean = torch.stack([a[k] for a in adapted]).mean(dim=0)
        torch.testing.assert_close(g, t - phi_mean)
    *_, phi = algorithm.adapt_steps(model, batch, REGRESSION, 3)
    for k, p in enumerate(phi.values()):
        torch.testing.assert_close(p, torch.stack([a[k] for a in adapted]))


def test_reptile_converges_to_the_closed_form_on_quadratic_tasks():
    """L_i(θ) = mean ½(θ − c_i)² per task: φ_i = c_i + (1 − α)^k (θ − c_i), so Reptile's fixed
    point is the mean of the c_i."""

    class Offset(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.theta.unsqueeze(-2).expand(*x.shape[:-1], 2)

    targets = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]])
    batch = TaskBatch(torch.zeros(3, 1, 1), targets[:, None, :], torch.zeros(3, 1, 1),
                      targets[:, None, :])  # fmt: skip
    model, algorithm = Offset(), Reptile(InnerStepSize(0.3), 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        algorithm.meta_loss(model, batch, REGRESSION, 0).loss.backward()
        optimizer.step()
    torch.testing.assert_close(model.theta.detach(), targets.mean(dim=0))


def test_imaml_meta_gradient_equals_finite_differences_of_the_solved_proximal_problem():
    """Linear regression tasks make the proximal problem a convex quadratic with a closed-form
    solution φ*(θ); the whole objective θ ↦ mean_i L_query,i(φ*_i(θ)) is differentiated by
    central differences and compared with iMAML's implicit gradient (converged inner loop,
    enough CG steps)."""
    torch.manual_seed(3)
    model = MLP((3, 1))
    batch = _regression_batch(3, seed=4, inputs=3)
    lam = 1.5
    algorithm = IMAML(InnerStepSize(0.05), inner_steps=3000, lam=lam, cg_steps=30)
    params = list(model.parameters())
    grads = torch.autograd.grad(algorithm.meta_loss(model, batch, REGRESSION, 0).loss, params)
    implicit = torch.cat([g.reshape(-1) for g in grads])

    def objective(flat: torch.Tensor) -> float:
        w, b = flat[:3].reshape(1, 3), flat[3:]
        total = 0.0
        for i in range(batch.n_tasks):
            x = torch.cat([batch.support_x[i], torch.ones(6, 1)], dim=1)
            y = batch.support_y[i]
            hessian = 2.0 / 6 * x.T @ x  # of mean (x·φ − y)²
            theta = torch.cat([w.reshape(-1), b])
            phi = torch.linalg.solve(hessian + lam * torch.eye(4),
                                     2.0 / 6 * x.T @ y.reshape(-1) + lam * theta)  # fmt: skip
            xq = torch.cat([batch.query_x[i], torch.ones(6, 1)], dim=1)
            total += float(((xq @ phi - batch.query_y[i].reshape(-1)) ** 2).mean())
        return total / batch.n_tasks

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    eps = 1e-6
    numeric = torch.stack([
        torch.tensor((objective(flat + eps * e) - objective(flat - eps * e)) / (2 * eps))
        for e in torch.eye(4)
    ])  # fmt: skip
    torch.testing.assert_close(implicit, numeric, rtol=1e-5, atol=1e-8)
    residual = algorithm.meta_loss(model, batch, REGRESSION, 0).metrics["inner/cg_residual"]
    assert residual < 1e-6  # reported, and converged here


def test_imaml_memory_does_not_grow_with_inner_steps():
    """The inner loop keeps no graph: the meta-gradient's graph is the same after 2 and 20
    steps (counted as the autograd nodes reachable from the surrogate loss)."""
    model, _, batch, problem = _setup("maml")

    def nodes(steps: int) -> int:
        loss = IMAML(InnerStepSize(0.05), steps, 2.0, 3).meta_loss(model, batch, problem, 0).loss
        seen, stack = set(), [loss.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
        return len(seen)

    assert nodes(2) == nodes(20)


def test_anil_is_maml_with_the_body_step_size_at_zero():
    torch.manual_seed(4)
    model = MLP((1, 8, 8, 1), "tanh")
    batch = _regression_batch()
    anil = make_algorithm(_config("anil"), model)
    head = is_head(model)
    params = {n: p.detach() for n, p in get_params(model).items()}
    zero_body = InnerStepSize(0.1, params, learnable=True, granularity="tensor")
    with torch.no_grad():
        for key, value in zero_body.values.items():
            if not head(key.split(":")[1].replace("/", ".")):
                value.zero_()
    maml = MAML(zero_body, inner_steps=2)
    n = sum(p.numel() for p in model.parameters())

    def model_grad(algorithm) -> torch.Tensor:
        return _meta_gradient(algorithm, model, batch, REGRESSION)[:n]

    torch.testing.assert_close(model_grad(anil), model_grad(maml))


def test_maml_plus_plus_multi_step_loss_anneals_to_maml():
    """The weights by hand (Antoniou et al. 2019, MSL: earlier steps lose 1/K per annealing
    span, floor 0.03/K), and the multi-step loss's gradient is the weighted sum of MAML's
    gradients through 1 and through 2 steps."""
    assert msl_weights(0, 4, 100) == pytest.approx([0.25] * 4)
    # halfway: 1/4 − 50/(4·100) = 0.125 each earlier step; the last 1/4 + 3·50/400 = 0.625
    assert msl_weights(50, 4, 100) == pytest.approx([0.125, 0.125, 0.125, 0.625])
    late = msl_weights(99, 4, 100)  # the floor 0.03/4 and the cap 1 − 3·0.03/4
    assert late == pytest.approx([0.0075, 0.0075, 0.0075, 0.9775])
    assert msl_weights(100, 4, 100) == [0.0, 0.0, 0.0, 1.0]
    assert msl_weights(3, 1, 10) == [1.0]
    torch.manual_seed(5)
    model = MLP((1, 8, 8, 1), "tanh")
    batch = _regression_batch()
    config = _config("maml_plus_plus", "msl_iterations=10")
    plus = make_algorithm(config, model)
    plain = MAML(InnerStepSize([0.1, 0.1]), inner_steps=2)  # LSLR at its initial values
    n = sum(p.numel() for p in model.parameters())
    after = _meta_gradient(plus, model, batch, REGRESSION, iteration=10)[:n]
    torch.testing.assert_close(after, _meta_gradient(plain, model, batch, REGRESSION)[:n])
    one_step = MAML(InnerStepSize([0.1]), inner_steps=1)
    through = [_meta_gradient(one_step, model, batch, REGRESSION)[:n], after]
    for iteration, (w1, w2) in ((0, (0.5, 0.5)), (5, (0.25, 0.75))):  # by hand, as above
        during = _meta_gradient(plus, model, batch, REGRESSION, iteration=iteration)[:n]
        torch.testing.assert_close(during, w1 * through[0] + w2 * through[1])
    assert not torch.allclose(through[0], through[1])  # so the weights matter
    # Derivative-order annealing: first order before doa_iterations, as first-order MAML.
    doa = make_algorithm(_config("maml_plus_plus", "msl_iterations=0", "doa_iterations=5"), model)
    first = MAML(InnerStepSize([0.1, 0.1]), inner_steps=2, mode="first_order")
    torch.testing.assert_close(_meta_gradient(doa, model, batch, REGRESSION, 0)[:n],
                               _meta_gradient(first, model, batch, REGRESSION)[:n])  # fmt: skip
    # ... and the config's second order from doa_iterations on.
    torch.testing.assert_close(_meta_gradient(doa, model, batch, REGRESSION, 5)[:n], after)


def test_proto_maml_starts_from_a_prototypical_network():
    """W_k = 2c_k, b_k = −‖c_k‖² from per-class mean features (computed here by a loop), and
    the step-0 predictions are a prototypical network's softmax over −‖f(x) − c_k‖²."""
    torch.manual_seed(6)
    model = Conv4(3, 1, 12, filters=4)
    batch = _classification_batch()
    algorithm = make_algorithm(_config("proto_maml"), model)
    start = next(algorithm.adapt_steps(model, batch, CLASSIFICATION, 0))
    for t in range(batch.n_tasks):
        features = model(batch.support_x[t], features_only=True)
        prototypes = torch.stack([features[batch.support_y[t] == k].mean(dim=0) for k in range(3)])
        torch.testing.assert_close(start["head.weight"][t], 2 * prototypes)
        torch.testing.assert_close(start["head.bias"][t], -(prototypes**2).sum(dim=1))
        query = model(batch.query_x[t], features_only=True)
        distances = torch.cdist(query, prototypes) ** 2
        logits = CLASSIFICATION.query_predictions(model, start, batch)[t]
        torch.testing.assert_close(logits.softmax(-1), (-distances).softmax(-1))
    assert torch.allclose(class_means(model, start, batch)[0] * 2, start["head.weight"][0])


@pytest.mark.parametrize("mode", ["second_order", "first_order"])
def test_proto_maml_adapts_body_and_head_as_separate_variables(mode):
    """One inner step from the prototype head equals SGD on the body and the head as separate
    leaves (the head's dependence on the body is not a second gradient path), and the
    meta-gradient still reaches the body through the head's initialisation in both modes."""
    torch.manual_seed(7)
    model = Conv4(3, 1, 12, filters=4)
    batch = _classification_batch(n_tasks=1)
    algorithm = make_algorithm(_config("proto_maml", "inner_steps=1", f"meta_gradient={mode}"),
                               model)  # fmt: skip
    adapted = list(algorithm.adapt_steps(model, batch, CLASSIFICATION, 1))[1]
    start = next(algorithm.adapt_steps(model, batch, CLASSIFICATION, 0))
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in start.items()}
    loss = CLASSIFICATION.support_loss(model, batch)(leaves).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    for (name, leaf), grad in zip(leaves.items(), grads):  # α = inner_lr = 0.1
        torch.testing.assert_close(adapted[name], leaf - 0.1 * grad, rtol=1e-5, atol=1e-6)
    gradient = torch.autograd.grad(algorithm.meta_loss(model, batch, CLASSIFICATION, 0).loss,
                                   list(model.blocks.parameters()))  # fmt: skip
    assert sum(g.abs().sum() for g in gradient) > 0


def test_leopard_meta_learns_its_head_generator():
    """The head is g(c_k) of per-class mean features (computed here by a loop), and the
    generator's meta-gradient agrees with central differences of the whole meta-loss."""
    model, algorithm, batch, problem = _setup("leopard")
    start = next(algorithm.adapt_steps(model, batch, problem, 0))
    for t in range(batch.n_tasks):
        features = model(batch.support_x[t], features_only=True)
        means = torch.stack([features[batch.support_y[t] == k].mean(dim=0) for k in range(3)])
        generated = algorithm.head.generator(means)  # (N, d + 1): [w_k, b_k]
        torch.testing.assert_close(start["head.weight"][t], generated[:, :-1])
        torch.testing.assert_close(start["head.bias"][t], generated[:, -1])
    generator = list(algorithm.head.parameters())
    loss = algorithm.meta_loss(model, batch, problem, 0).loss
    grads = torch.autograd.grad(loss, generator)
    eps = 1e-6
    for tensor, grad in zip(generator, grads):
        for index in range(0, tensor.numel(), max(1, tensor.numel() // 2)):
            value = tensor.data.view(-1)[index].item()
            losses = []
            for shifted in (value + eps, value - eps):
                tensor.data.view(-1)[index] = shifted
                losses.append(algorithm.meta_loss(model, batch, problem, 0).loss.item())
            tensor.data.view(-1)[index] = value
            numeric = (losses[0] - losses[1]) / (2 * eps)
            assert grad.view(-1)[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7)
    assert any(g.abs().sum() > 0 for g in grads)
    learned = [v for k, v in algorithm.named_parameters() if k.startswith("step_size")]
    assert len(learned) == 2 * len(list(model.parameters()))  # per tensor and per inner step


def test_algorithms_that_need_a_head_refuse_a_model_without_one():
    from metarl.config import ConfigError

    with pytest.raises(ConfigError, match="proto_maml: .*no linear `head`"):
        make_algorithm(_config("proto_maml"), MLP((1, 4, 1)))


def test_step_size_lr_moves_only_the_step_sizes_at_its_rate():
    """With SGD, one outer step changes each step size by exactly −step_size_lr · its gradient
    and the network's weights by −meta_lr · theirs."""
    from types import SimpleNamespace

    from metarl.supervised.trainer import parameter_groups

    model = torch.nn.Linear(3, 1)
    params = {n: p.detach() for n, p in get_params(model).items()}
    algorithm = MAML(InnerStepSize(0.1, params, learnable=True, granularity="tensor"), 1)
    meta_params = [*model.parameters(), *algorithm.parameters()]
    config = SimpleNamespace(meta_lr=0.5, step_size_lr=0.01)
    optimizer = torch.optim.SGD(parameter_groups(config, meta_params, algorithm), lr=0.5)
    before = [p.detach().clone() for p in meta_params]
    for p in meta_params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    n_model = len(list(model.parameters()))
    for i, (p, b) in enumerate(zip(meta_params, before)):
        rate = 0.5 if i < n_model else 0.01
        torch.testing.assert_close(p.detach(), b - rate)
    config.step_size_lr = 0.0  # off: one group at meta_lr, as before the option existed
    assert len(parameter_groups(config, meta_params, algorithm)) == 1


def test_meta_sgd_draws_its_step_sizes_as_the_paper_from_the_seed():
    """Each α entry from U[0.005, 0.1] (Li et al. 2017), the same for the same seed;
    meta_sgd_init=[] starts them all at inner_lr."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8, 1), "tanh")

    def alphas(*extra):
        algorithm = make_algorithm(_config("meta_sgd", *extra), model)
        return torch.cat([v.detach().flatten() for v in algorithm.step_size.values.values()])

    drawn = alphas()
    assert drawn.numel() == sum(p.numel() for p in model.parameters())  # one α per weight
    assert 0.005 <= drawn.min() and drawn.max() <= 0.1 and drawn.std() > 0.02
    assert torch.equal(drawn, alphas()) and not torch.equal(drawn, alphas("seed=1"))
    assert torch.equal(alphas("meta_sgd_init=[]"), torch.full_like(drawn, 0.1))


def test_nil_labels_each_query_by_softmaxed_cosines_to_the_support_features():
    """Against a loop over tasks and queries with torch's cosine similarity."""
    from metarl.algorithms.anil import nil_probabilities

    torch.manual_seed(8)
    model = Conv4(3, 1, 12, filters=4)
    batch = _classification_batch(n_tasks=2, n_way=3, shots=2)
    probabilities = nil_probabilities(model, batch, CLASSIFICATION)
    assert probabilities.shape == (2, 6, 3)
    for t in range(2):
        support = model(batch.support_x[t], features_only=True)
        query = model(batch.query_x[t], features_only=True)
        for q in range(6):
            cosines = torch.nn.functional.cosine_similarity(query[q : q + 1], support, dim=-1)
            weights = cosines.softmax(dim=0)
            expected = torch.stack([weights[batch.support_y[t] == k].sum() for k in range(3)])
            torch.testing.assert_close(probabilities[t, q], expected)


def test_prototype_probe_is_a_prototypical_network_on_the_features():
    """Against a loop over tasks and queries: nearest class mean in squared Euclidean distance
    of the body's features; on a variable-way problem the absent classes are ignored."""
    from metarl.algorithms.heads import prototype_scores
    from metarl.supervised.tasks import variable_way_accuracy_per_task

    torch.manual_seed(9)
    model = Conv4(3, 1, 12, filters=4)
    batch = _classification_batch(n_tasks=8, n_way=3, shots=3)
    expected = []
    for t in range(8):
        support = model(batch.support_x[t], features_only=True)
        query = model(batch.query_x[t], features_only=True)
        means = torch.stack([support[batch.support_y[t] == k].mean(0) for k in range(3)])
        nearest = torch.cdist(query, means).argmin(dim=1)
        expected.append((nearest == batch.query_y[t]).float().mean())
    expected = torch.stack(expected)
    assert len(set(expected.tolist())) > 1  # tasks differ, so the comparison can fail
    torch.testing.assert_close(prototype_scores(model, batch, CLASSIFICATION), expected)
    wide = Conv4(5, 1, 12, filters=4)  # a Meta-Dataset head: more outputs than ways
    wide.load_state_dict({k: v for k, v in model.state_dict().items() if "head" not in k},
                         strict=False)  # fmt: skip
    variable = Problem(cross_entropy_per_task, variable_way_accuracy_per_task, "accuracy")
    torch.testing.assert_close(prototype_scores(wide, batch, variable), expected)


def test_safeguarded_inner_steps_converge_where_plain_steps_diverge():
    """Per-task quadratics ½a‖φ − c‖² + λ/2‖φ − θ‖²: with α(a + λ) > 2 plain gradient descent
    diverges on that task; the safeguarded solver reaches the closed form (a c + λ θ)/(a + λ),
    and on the well-conditioned task it takes exactly the plain steps."""
    from metarl.algorithms.imaml import safeguarded_steps
    from metarl.algorithms.maml import gradient_steps, last

    a = torch.tensor([1.0, 50.0])
    c = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    theta = {"w": torch.zeros(2, 2)}
    lam, alpha = 2.0, 0.1  # task 1: α(a + λ) = 5.2 > 2

    def loss(params):
        w = params["w"]
        return 0.5 * a * (w - c).pow(2).sum(1) + 0.5 * lam * (w - theta["w"]).pow(2).sum(1)

    plain = last(gradient_steps(loss, {}, theta, alpha, 60))["w"]
    guarded = list(safeguarded_steps(loss, theta, alpha, 60))
    solution = (a[:, None] * c + lam * theta["w"]) / (a[:, None] + lam)
    assert not torch.isfinite(plain[1]).all() or plain[1].abs().max() > 1e6
    torch.testing.assert_close(guarded[-1]["w"], solution, atol=1e-5, rtol=0)
    torch.testing.assert_close(guarded[-1]["w"][0], plain[0])  # plain steps where they work
    losses = torch.stack([loss(p) for p in guarded])
    assert (losses[1:] <= losses[:-1]).all()  # never an increase


def test_reptile_inner_optimizer_from_the_config():
    config = load_config("sinusoid", ["algorithm=reptile", "reptile_inner_optimizer=adam"])
    assert make_algorithm(config, MLP((1, 4, 1))).inner_optimizer == "adam"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="reptile_inner_optimizer"):
        load_config("sinusoid", ["reptile_inner_optimizer=rmsprop"])


def _per_task_bnwb_reference(model, step_sets, step_size, batch, steps):
    """MAML++ with per-step BatchNorm weights, written as a plain loop over tasks: step k's
    support loss and the query loss after it use BatchNorm set k; only the rest adapts."""
    from torch.func import functional_call

    theta = dict(model.named_parameters())
    losses = []
    for t in range(batch.n_tasks):
        phi = {n: p for n, p in theta.items() if n not in step_sets[0]}
        for k in range(steps):
            logits = functional_call(model, {**phi, **step_sets[k]}, (batch.support_x[t],))
            loss = nn.functional.cross_entropy(logits, batch.support_y[t])
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
            phi = {n: p - step_size(k, n) * g for (n, p), g in zip(phi.items(), grads)}
        logits = functional_call(model, {**phi, **step_sets[steps - 1]}, (batch.query_x[t],))
        losses.append(nn.functional.cross_entropy(logits, batch.query_y[t]))
    return torch.stack(losses).mean()


def test_maml_plus_plus_per_step_batchnorm_weights_equal_a_per_task_loop():
    """BNWB: step k (and the query after it) uses BatchNorm set k, set 0 being the model's own;
    the loss and the meta-gradients of θ and of every set equal a per-task loop's."""
    torch.manual_seed(8)
    model = Conv4(3, 1, 12, filters=4)
    config = load_config("omniglot-5w1s", ["algorithm=maml_plus_plus", "inner_steps=3",
                                           "inner_lr=0.1", "msl_iterations=0"])  # fmt: skip
    algorithm = make_algorithm(config, model)
    per_step = algorithm.per_step
    assert per_step.names == {f"blocks.{i}.bn.{w}" for i in range(4) for w in ("weight", "bias")}
    with torch.no_grad():  # sets that differ, so that using the wrong one shows
        for p in per_step.later_steps.values():
            p.add_(0.3 * torch.randn_like(p))
    batch = _classification_batch()
    theta = dict(model.named_parameters())
    step_sets = [{n: theta[n] for n in per_step.names}] + [
        {n: per_step.later_steps[n.replace(".", "/")][k - 1] for n in per_step.names}
        for k in (1, 2)
    ]
    reference = _per_task_bnwb_reference(model, step_sets, algorithm.step_size, batch, 3)
    loss = algorithm.meta_loss(model, batch, CLASSIFICATION, iteration=0).loss
    torch.testing.assert_close(loss, reference)
    leaves = [*model.parameters(), *per_step.parameters()]
    for got, want in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(reference, leaves)):
        torch.testing.assert_close(got, want)
        assert want.abs().sum() > 0  # every set (and all of θ) is meta-learned
    # Test time: the parameters after s steps carry set max(s − 1, 0), steps past training the last.
    adapted = list(algorithm.adapt_steps(model, batch, CLASSIFICATION, 4))
    name = "blocks.0.bn.weight"
    for s, want in enumerate([0, 0, 1, 2, 2]):
        expected = step_sets[want][name].detach()
        torch.testing.assert_close(adapted[s][name], expected.expand_as(adapted[s][name]))
        assert not adapted[s][name].requires_grad


def test_maml_plus_plus_without_batchnorm_or_without_bnwb_adapts_every_parameter():
    """No BatchNorm (the sinusoid MLP): BNWB is a no-op; with ``bn_per_step_weights=false``
    the BatchNorm weights adapt like the rest, as in MAML."""
    assert _setup("maml_plus_plus")[1].per_step is None
    model = Conv4(3, 1, 12, filters=4)
    config = load_config("omniglot-5w1s", ["algorithm=maml_plus_plus", "inner_steps=2",
                                           "bn_per_step_weights=false"])  # fmt: skip
    algorithm = make_algorithm(config, model)
    assert algorithm.per_step is None
    after = list(algorithm.adapt_steps(model, _classification_batch(), CLASSIFICATION, 1))[1]
    assert not torch.allclose(after["blocks.0.bn.weight"][0], model.blocks[0].bn.weight)


def test_the_reported_step_size_counts_step_sizes_only():
    """A head generator's or per-step BatchNorm's tensors are meta-learned but are not α: at
    initialisation every α of LEOPARD and MAML++ is inner_lr, and the report says so."""
    from metarl.supervised.adaptation import step_size_used

    model = Conv4(3, 1, 12, filters=4)
    for name in ("leopard", "maml_plus_plus"):
        config = load_config("omniglot-5w1s", [f"algorithm={name}", "inner_lr=0.1"])
        reported = step_size_used(config, make_algorithm(config, model))
        assert reported == "meta-learned: mean 0.1, range [0.1, 0.1]"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["algorithm=reptile", "meta_gradient=first_order"], "reptile computes its own"),
        (["algorithm=imaml", "meta_gradient=finite_difference"], "imaml computes its own"),
        (["algorithm=reptile", "learn_inner_lr=element"], "reptile sets its inner step sizes"),
        (["algorithm=imaml", "learn_inner_lr=global"], "imaml sets its inner step sizes"),
        (["algorithm=meta_sgd", "learn_inner_lr=tensor"], "meta_sgd sets its inner step sizes"),
        (["algorithm=maml_plus_plus", "inner_steps=0"], "maml_plus_plus needs at least one"),
        (["algorithm=reptile", "inner_steps=0"], "reptile needs at least one inner step"),
        (["meta_lr_schedule=cosine", "meta_lr_min=0.01"], "would raise the learning rate"),
        (["algorithm=proto_maml"], "proto_maml builds a classifier's head"),
    ],
)
def test_a_setting_the_algorithm_would_ignore_is_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config("sinusoid", settings)


def test_the_same_settings_are_accepted_where_they_act():
    maml = load_config("sinusoid", ["meta_gradient=first_order", "learn_inner_lr=element"])
    assert (maml.meta_gradient, maml.learn_inner_lr) == ("first_order", "element")
    anil = load_config("sinusoid", ["algorithm=anil", "learn_inner_lr=global", "inner_steps=0"])
    assert (anil.algorithm, anil.learn_inner_lr, anil.inner_steps) == ("anil", "global", 0)
    cosine = load_config("sinusoid", ["meta_lr_schedule=cosine", "meta_lr_min=0.0001"])
    assert (cosine.meta_lr_schedule, cosine.meta_lr_min) == ("cosine", 0.0001)


def test_task_losses_must_give_one_loss_per_task():
    model, algorithm, batch, _ = _setup("maml")
    averaged = Problem(lambda p, y: ((p - y) ** 2).mean())  # over the tasks too: a 1/n step
    with pytest.raises(ValueError, match=r"returned shape \(\) for 4 tasks: .* shape \(4,\)"):
        algorithm.meta_loss(model, batch, averaged, 0)


def test_dropout_draws_its_own_mask_for_each_task():
    """Tasks run under one vmap: each task gets its own Dropout mask (and eval mode none)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 64), nn.Dropout(0.5), nn.Linear(64, 1))
    x = torch.randn(1, 8, 1).expand(3, 8, 1)  # three identical tasks
    params = {n: p.expand(3, *p.shape) for n, p in get_params(model).items()}
    from metarl.core import task_forward

    out = task_forward(model, params, x)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    model.eval()
    out = task_forward(model, params, x)
    torch.testing.assert_close(out[0], out[1])
    model.train()
    step = MAML(InnerStepSize(0.01), 1, "second_order", 1e-3)
    batch = TaskBatch(x, torch.sin(x), x, torch.sin(x))
    step.meta_loss(model, batch, REGRESSION, 0).loss.backward()  # second order through masks
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_proto_heads_need_a_features_only_forward():
    class NoFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):  # noqa: ANN001, ANN202 - a user's model, as written
            return self.head(self.body(x))

    for name in ("proto_maml", "leopard"):
        with pytest.raises(ValueError, match="takes no `features_only` argument"):
            make_algorithm(_config(name), NoFeatures())


def test_finite_differences_replay_the_dropout_masks_of_their_gradient():
    """With the masks of the gradient replayed, central differences of a smooth model's
    gradient agree with the exact second-order meta-gradient from the same seed."""
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 1))
    batch = _regression_batch()
    grads = {}
    for mode in ("second_order", "finite_difference"):
        torch.manual_seed(3)
        model.zero_grad()
        MAML(InnerStepSize(0.1), 1, mode, 1e-4).meta_loss(
            model, batch, REGRESSION, 0
        ).loss.backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(
        grads["finite_difference"], grads["second_order"], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_own_settings_declare_exactly_the_settings_without_effect(name):
    """Each algorithm's OWN_SETTINGS matches what it does, with the setting forced past the
    config's check: a meta_gradient or learn_inner_lr it declares changes nothing, one it does
    not declare changes the meta-gradient or the meta-learned step sizes; and it refuses to be
    built without an inner step exactly when it declares that it needs one."""
    own = OWN_SETTINGS_BY_ALGORITHM[name]

    def build(**forced):
        torch.manual_seed(0)
        model, _, batch, problem = _setup(name)
        config = _config(name)
        for key, value in forced.items():  # past the check, as a config without it would be
            object.__setattr__(config, key, value)
        algorithm = make_algorithm(config, model)
        return algorithm, _meta_gradient(algorithm, model, batch, problem)

    default, default_gradient = build()
    _, first_order_gradient = build(meta_gradient="first_order")
    same = torch.allclose(default_gradient, first_order_gradient, rtol=1e-10, atol=1e-12)
    assert same == bool(own.meta_gradient)
    shapes = [tuple(p.shape) for p in default.parameters()]
    for granularity in ("global", "element"):  # one of them differs from any algorithm's own
        learned, _ = build(learn_inner_lr=granularity)
        if [tuple(p.shape) for p in learned.parameters()] != shapes:
            assert not own.learn_inner_lr, granularity
            break
    else:
        assert own.learn_inner_lr
    if own.needs_inner_steps:
        with pytest.raises(ConfigError, match="needs at least one inner step, got 0"):
            build(inner_steps=0)
    else:  # zero steps is pretraining: the query loss's gradient at θ
        assert torch.isfinite(build(inner_steps=0)[1]).all()


def test_anil_says_which_layer_it_adapts_when_the_model_does_not_name_its_head():
    """Registration order is not call order: a model that defines its output layer first and
    names none `head` gets a warning naming the layer ANIL adapts; a `head` or an
    nn.Sequential (called in its order) gets none."""
    import warnings

    from metarl.algorithms.anil import head_prefix

    class OutputFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out, self.body = nn.Linear(4, 2), nn.Linear(3, 4)

        def forward(self, x):  # noqa: ANN001, ANN202 - a user's model, as written
            return self.out(torch.relu(self.body(x)))

    with pytest.warns(UserWarning, match="ANIL adapts 'body', the last layer OutputFirst"):
        assert head_prefix(OutputFirst()) == "body."
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert head_prefix(MLP((1, 8, 1), "tanh")) == "2."
        assert head_prefix(Conv4(3, 1, 12, filters=4)) == "head."
