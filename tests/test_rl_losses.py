"""REINFORCE, surrogate and KL per task against hand and independent computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from metarl.core import expand_to_tasks, get_params, single_forward
from metarl.core.functional import task_forward
from metarl.rl.episodes import Episodes
from metarl.rl.losses import masked_task_mean, mean_kl, reinforce_loss, surrogate_loss
from metarl.rl.maml import inner_loss
from metarl.rl.policy import GaussianMLPPolicy, gaussian


def test_masked_task_mean_by_hand() -> None:
    # T = 2, 2 tasks, 2 episodes; task 1's second episode has one valid step.
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 99.0]]])
    masks = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 0.0]]])
    torch.testing.assert_close(
        masked_task_mean(values, masks), torch.tensor([(1 + 2 + 5 + 6) / 4, (3 + 4 + 7) / 3])
    )
    with pytest.raises(ValueError, match="no valid step"):
        masked_task_mean(values, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="shape"):
        reinforce_loss(values[0], values[0], masks[0])


def test_reinforce_loss_by_hand() -> None:
    log_probs = torch.tensor([[[-1.0]], [[-2.0]]])  # T = 2, one task, one episode
    advantages = torch.tensor([[[3.0]], [[0.5]]])
    masks = torch.ones(2, 1, 1)
    # -(−1·3 + −2·0.5) / 2 = 2
    torch.testing.assert_close(reinforce_loss(log_probs, advantages, masks), torch.tensor([2.0]))


def test_surrogate_at_ratio_one_has_the_reinforce_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    log_probs = torch.randn(5, 3, 4, generator=gen, requires_grad=True)
    advantages = torch.randn(5, 3, 4, generator=gen)
    masks = (torch.rand(5, 3, 4, generator=gen) > 0.3).float().cummin(dim=0).values
    masks[0] = 1.0
    surrogate = surrogate_loss(log_probs, log_probs.detach(), advantages, masks)
    reinforce = reinforce_loss(log_probs, advantages, masks)
    torch.testing.assert_close(surrogate, -masked_task_mean(advantages, masks))  # ratio 1
    g1 = torch.autograd.grad(surrogate.sum(), log_probs)[0]
    g2 = torch.autograd.grad(reinforce.sum(), log_probs)[0]
    torch.testing.assert_close(g1, g2)


def test_mean_kl_is_the_closed_form_for_gaussians() -> None:
    old = gaussian(torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[0.0, math.log(2.0)]]]]))
    new = gaussian(torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[math.log(2.0), 0.0]]]]))
    # KL(N(μ0,σ0²) || N(μ1,σ1²)) = log(σ1/σ0) + (σ0² + (μ0−μ1)²) / (2σ1²) − 1/2, summed over dims
    dim0 = math.log(2.0) + (1 + 1) / (2 * 4) - 0.5
    dim1 = math.log(0.5) + (4 + 0) / 2 - 0.5
    kl = mean_kl(old, new, torch.ones(1, 1, 1))
    assert float(kl) == pytest.approx(dim0 + dim1)


def test_reinforce_gradient_equals_a_per_sample_loop() -> None:
    """The batched inner loss vs a loop over (task, episode, step) with an unbatched policy."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=[5], activation="tanh", init_std=0.5).double()
    gen = torch.Generator().manual_seed(1)
    shape = (4, 2, 3)
    masks = torch.ones(shape, dtype=torch.float64)
    masks[2:, 1, 0] = 0.0  # one short episode
    episodes = Episodes(
        observations=torch.randn(*shape, 2, generator=gen, dtype=torch.float64),
        actions=torch.randn(*shape, 2, generator=gen, dtype=torch.float64),
        rewards=torch.zeros(shape, dtype=torch.float64),
        masks=masks,
        advantages=torch.randn(shape, generator=gen, dtype=torch.float64),
    )
    theta = get_params(policy)
    batched = inner_loss(policy, episodes)(expand_to_tasks(theta, 2))
    grads = torch.autograd.grad(batched[1], list(theta.values()))

    # Reference: task 1 only, one sample at a time, Normal from torch.distributions directly.
    total, count = 0.0, 0
    for t in range(shape[0]):
        for e in range(shape[2]):
            if masks[t, 1, e] == 0:
                continue
            mean, log_std = single_forward(policy, theta, episodes.observations[t, 1, e])
            logp = Normal(mean, log_std.exp()).log_prob(episodes.actions[t, 1, e]).sum()
            total = total - logp * episodes.advantages[t, 1, e]
            count += 1
    expected = torch.autograd.grad(total / count, list(theta.values()))
    torch.testing.assert_close(batched[1], (total / count).detach())
    for g, ref in zip(grads, expected):
        torch.testing.assert_close(g, ref)


def _task_batch(activation: str) -> tuple[GaussianMLPPolicy, dict[str, torch.Tensor]]:
    """A float64 policy with 4 tasks' parameters, one log σ below its floor (log 0.5)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(5, 3, (7, 6), activation, min_std=0.5).double()
    params = {
        name: p.detach() + 0.3 * torch.randn(4, *p.shape, dtype=torch.float64)
        for name, p in get_params(policy).items()
    }
    params["log_std"][0, 0] = -2.0  # clamped: no derivative passes
    return policy, params


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_policy_linearize_equals_autograd(activation: str) -> None:
    """The kept-activation JVP and VJP of the task-batched policy (the Fisher product's Q a
    and Qᵀ b) give torch.func.jvp's and autograd's numbers, with the clamp of log σ."""
    policy, params = _task_batch(activation)
    obs = torch.randn(4, 8, 2, 5, dtype=torch.float64)
    tangents = {name: torch.randn_like(p) for name, p in params.items()}
    names = list(params)

    def forward(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return task_forward(policy, dict(zip(names, tensors)), obs)

    outputs, expected = torch.func.jvp(forward, tuple(params.values()), tuple(tangents.values()))
    linear = policy.linearize(params, obs)
    d_mean, d_log_std = linear.jvp(tangents)
    torch.testing.assert_close(linear.mean, outputs[0])
    torch.testing.assert_close(linear.log_std, outputs[1])
    torch.testing.assert_close(d_mean, expected[0])
    torch.testing.assert_close(d_log_std, expected[1])
    assert d_mean.abs().max() > 0 and bool((d_log_std[0, ..., 0] == 0).all())

    cotangents = (torch.randn_like(d_mean), torch.randn_like(d_log_std))
    _, pullback = torch.func.vjp(forward, *params.values())
    for name, got, want in zip(names, linear.vjp(*cotangents).values(), pullback(cotangents)):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_log_prob_hessian_equals_double_backward(activation: str) -> None:
    """The R-operator Hessian-vector product of Σ w log π (the inner loss's curvature) against
    autograd's double backward, per task, with a clamped log σ."""
    policy, params = _task_batch(activation)
    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    obs = torch.randn(4, 8, 2, 5, dtype=torch.float64)
    actions = torch.randn(4, 8, 2, 3, dtype=torch.float64)
    weights = torch.randn(4, 8, 2, dtype=torch.float64)
    mean, log_std = task_forward(policy, leaves, obs)
    objective = (gaussian(mean, log_std).log_prob(actions) * weights).sum()
    grads = torch.autograd.grad(objective, list(leaves.values()), create_graph=True)
    vector = {name: torch.randn_like(p) for name, p in params.items()}
    expected = torch.autograd.grad(
        sum((g * v).sum() for g, v in zip(grads, vector.values())), list(leaves.values())
    )
    product = policy.log_prob_hessian(params, obs, actions, weights)(vector)
    assert list(product) == list(params)
    for (name, got), want in zip(product.items(), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)
    assert bool((product["log_std"][0, 0] == 0).all()) and product["mean.2.weight"].abs().max() > 0


def test_linearize_needs_a_task_batch() -> None:
    policy = GaussianMLPPolicy(5, 3, (7,))
    with pytest.raises(ValueError, match="task-batched"):
        policy.linearize(get_params(policy), torch.randn(4, 5))
