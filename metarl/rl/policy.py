"""Gaussian MLP policy with a learned, state-independent log standard deviation.

``π_θ(a | s) = N(μ_θ(s), diag(σ²))`` with ``μ`` an MLP and ``log σ`` a free parameter vector, as
in the MAML paper (Sec. 5.3) and its reference code. Every parameter, ``log σ`` included, is
adapted by the inner loop.

The module is task-batch aware (``native_task_batch``): under
:func:`metarl.core.functional.task_forward` its parameters carry a leading task dimension and
all tasks are evaluated by one batched matmul per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from metarl.core.functional import Params, single_forward, task_forward
from metarl.core.layers import MLP
from metarl.seeding import seeded

if TYPE_CHECKING:
    from metarl.rl.config import RLConfig


class GaussianMLPPolicy(nn.Module):
    """``obs -> (mean, log_std)`` of a diagonal Gaussian over actions.

    Args:
        obs_dim: size of an observation.
        action_dim: size of an action.
        hidden_sizes: hidden widths of the mean network.
        activation: ``"relu"`` or ``"tanh"``.
        init_std: initial σ of every action dimension.
        min_std: σ is floored at this value (its gradient stops below it), so a collapsing
            σ cannot produce infinite log-probabilities; pytorch-maml-rl uses 1e-6.
    """

    native_task_batch = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        min_std: float = 1e-6,
    ) -> None:
        super().__init__()
        if not init_std > 0 or not min_std >= 0:
            raise ValueError(f"need init_std > 0 and min_std >= 0, got {init_std}, {min_std}")
        self.mean = MLP([obs_dim, *hidden_sizes, action_dim], activation)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.min_log_std = math.log(min_std) if min_std > 0 else -math.inf
        self.obs_dim, self.action_dim = obs_dim, action_dim
        # Glorot-uniform weights and zero biases (the initialisation of the reference code):
        # the initial mean is close to 0 for every state, so exploration starts symmetric.
        for module in self.mean.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log σ of the action distribution.

        Shapes:
            unbatched parameters: ``obs (..., obs_dim)`` -> both ``(..., action_dim)``.
            task batch (``log_std (n_tasks, action_dim)``): ``obs (n_tasks, ..., obs_dim)``
            -> both ``(n_tasks, ..., action_dim)``.
        """
        mean = self.mean(obs)
        log_std = self.log_std.clamp(min=self.min_log_std)
        if log_std.dim() == 2:  # task batch: broadcast over the task's own batch dimensions
            log_std = log_std.reshape(log_std.shape[0], *([1] * (mean.dim() - 2)), -1)
        return mean, log_std.expand_as(mean)

    def _split(self, params: Params) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The mean network's own parameters, log σ after the floor, and where the floor
        lets the derivative through (as autograd's clamp does: where log σ >= the floor)."""
        mlp = self._mean_tangents(params)
        log_std = params["log_std"].detach()
        passes = (log_std >= self.min_log_std).to(log_std.dtype)
        return mlp, log_std.clamp(min=self.min_log_std), passes

    def _mean_tangents(self, tensors: Params) -> dict[str, Tensor]:
        """The entries of the mean network (parameters or tangents), by its own names."""
        return {n[len("mean.") :]: t for n, t in tensors.items() if n.startswith("mean.")}

    def linearize(self, params: Params, obs: Tensor) -> PolicyLinearization:
        """``(mean, log σ)`` of a task batch, with their Jacobian-vector and vector-Jacobian
        products in ``params`` (the numbers of :func:`torch.func.jvp` and of autograd's
        backward pass, with the hidden activations computed once:
        :class:`metarl.core.layers.MLPLinearization`).

        Args:
            params: parameters with a leading task dimension ``n_tasks``.
            obs: observations ``(n_tasks, ..., obs_dim)``, held fixed.
        """
        mlp_params, log_std, passes = self._split(params)
        mean_net = self.mean.linearize(mlp_params, obs)
        mean = mean_net.output
        shape = (log_std.shape[0], *([1] * (mean.dim() - 2)), log_std.shape[-1])

        def jvp(tangents: Params) -> tuple[Tensor, Tensor]:
            d_mean = mean_net.jvp(self._mean_tangents(tangents))
            d_log_std = (tangents["log_std"].detach() * passes).reshape(shape)
            return d_mean, d_log_std.expand_as(d_mean)

        def vjp(grad_mean: Tensor, grad_log_std: Tensor) -> Params:
            grads = {f"mean.{n}": g for n, g in mean_net.vjp(grad_mean).items()}
            per_task = grad_log_std.reshape(grad_log_std.shape[0], -1, self.action_dim)
            grads["log_std"] = per_task.sum(dim=1) * passes
            return {name: grads[name] for name in params}

        return PolicyLinearization(mean, log_std.reshape(shape).expand_as(mean), jvp, vjp)

    def log_prob_hessian(
        self, params: Params, obs: Tensor, actions: Tensor, weights: Tensor
    ) -> Callable[[Params], Params]:
        """``v ↦ ∇²_params L · v`` per task, for ``L = Σ weights · log π_params(actions | obs)``.

        The curvature of the inner REINFORCE loss (``weights = −advantage · mask / steps``),
        which the Fisher product of MAML-TRPO applies twice per inner step in every
        conjugate-gradient iteration.
        For ``d = a − μ``: ``∂L/∂μ = w d / σ²``, ``∂L/∂log σ = Σ w (d² / σ² − 1)``, and their
        tangents along ``v`` are ``−w/σ² (Rμ + 2 d Rlogσ)`` and ``−2 Σ w d/σ² (Rμ + d Rlogσ)``;
        the mean network carries them through its R-operator
        (:meth:`metarl.core.layers.MLPLinearization.curvature`). The numbers of autograd's double
        backward (tested), with the activations kept across products.

        Args:
            params: parameters with a leading task dimension ``n_tasks``.
            obs: ``(n_tasks, ..., obs_dim)``.
            actions: ``(n_tasks, ..., action_dim)``.
            weights: ``(n_tasks, ...)``, one per step.

        Returns:
            The product: directions shaped like ``params`` to products shaped like ``params``.
        """
        mlp_params, log_std, passes = self._split(params)
        mean_net = self.mean.linearize(mlp_params, obs)
        n_tasks = obs.shape[0]
        w = weights.detach().reshape(n_tasks, -1, 1)
        mean = mean_net.output.reshape(n_tasks, -1, self.action_dim)
        diff = actions.detach().reshape(n_tasks, -1, self.action_dim) - mean
        w_scaled = w * torch.exp(-2.0 * log_std).unsqueeze(1)  # w / σ², σ per task
        mean_hvp = mean_net.curvature(w_scaled * diff)  # ∂L/∂μ = w d / σ²

        @torch.no_grad()
        def product(vector: Params) -> Params:
            r_log_std = (vector["log_std"] * passes).unsqueeze(1)  # (n_tasks, 1, action_dim)

            def output_grad_r(d_mean: Tensor) -> Tensor:
                return -w_scaled * (d_mean.reshape(diff.shape) + 2.0 * diff * r_log_std)

            mean_part, d_mean = mean_hvp(self._mean_tangents(vector), output_grad_r)
            r_mean = d_mean.reshape(diff.shape)
            r_log_std_grad = -2.0 * (w_scaled * diff * (r_mean + diff * r_log_std)).sum(dim=1)
            out = {f"mean.{n}": t for n, t in mean_part.items()}
            out["log_std"] = r_log_std_grad * passes
            return {n: out[n] for n in params}

        return product

    @torch.no_grad()
    def act(
        self,
        obs: Tensor | np.ndarray,
        deterministic: bool = True,
        params: Params | None = None,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """The action for ``obs``: the mean action, or a sample ``a ~ N(μ, σ²)``.

        Args:
            obs: ``(obs_dim,)`` or a batch ``(..., obs_dim)``, a tensor or a numpy array.
            deterministic: return the mean action (else sample one).
            params: adapted parameters (no task dimension, as
                :meth:`metarl.trained.LoadedRun.adapt_policy` returns); None: the policy's own.
            generator: the sampling noise's source.

        Returns:
            ``(action_dim,)`` or ``(..., action_dim)`` float32 numpy actions (what a gymnasium
            environment takes).
        """
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        mean, log_std = self(x) if params is None else single_forward(self, params, x)
        if deterministic:
            return mean.numpy()
        noise = torch.randn(mean.shape, generator=generator)
        return (mean + log_std.exp() * noise).numpy()

    def distribution(self, params: Params, obs: Tensor, task_dim: int = 0) -> Independent:
        """``π_params(· | obs)`` for a task batch.

        Args:
            params: parameters with a leading task dimension ``n_tasks``.
            obs: observations with ``n_tasks`` at dimension ``task_dim``, e.g.
                ``(n_tasks, ..., obs_dim)``, or ``(T, n_tasks, E, obs_dim)`` with ``task_dim=1``
                (the layout of :class:`~metarl.rl.episodes.Episodes`).
            task_dim: where the task dimension of ``obs`` is.

        Returns:
            A distribution whose batch shape is ``obs.shape[:-1]`` (same layout) over
            ``(action_dim,)`` events: ``log_prob`` sums over the action dimensions.
        """
        mean, log_std = task_forward(self, params, obs.movedim(task_dim, 0))
        return gaussian(mean.movedim(0, task_dim), log_std.movedim(0, task_dim))


class PolicyLinearization(NamedTuple):
    """:meth:`GaussianMLPPolicy.linearize`'s result.

    Attributes:
        mean: ``(n_tasks, ..., action_dim)``, without a graph.
        log_std: ``(n_tasks, ..., action_dim)`` (log σ after its floor, broadcast).
        jvp: parameter tangents (shaped like ``params``) -> ``(d mean, d log_std)``.
        vjp: ``(∂L/∂mean, ∂L/∂log_std)`` -> ``∂L/∂params`` per task.
    """

    mean: Tensor
    log_std: Tensor
    jvp: Callable[[Params], tuple[Tensor, Tensor]]
    vjp: Callable[[Tensor, Tensor], Params]


def gaussian(mean: Tensor, log_std: Tensor) -> Independent:
    """The diagonal Gaussian ``N(mean, diag(exp(log_std)²))`` over the last dimension."""
    return _diagonal_normal(mean, log_std.exp())


def detach_distribution(dist: Independent) -> Independent:
    """A copy of ``dist`` that no gradient flows through (the "old" policy of TRPO)."""
    return _diagonal_normal(dist.base_dist.loc.detach(), dist.base_dist.scale.detach())


def _diagonal_normal(mean: Tensor, std: Tensor) -> Independent:
    # Argument validation is off: it costs a support check per log_prob in the hot loop.
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


def build_policy(config: RLConfig) -> GaussianMLPPolicy:
    """The untrained policy a meta-RL config describes, its initial weights drawn from ``seed``.

    Its input and output sizes are those of the config's environment.
    """
    from metarl.rl.task_envs import make_batched_env

    env = make_batched_env(config.env, 1, config.horizon)
    with seeded(config.seed):
        return GaussianMLPPolicy(
            env.observation_dim, env.action_dim, config.hidden_sizes, config.activation,
            config.init_std, config.min_std,
        )  # fmt: skip
