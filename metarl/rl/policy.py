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

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from metarl.core.functional import Params, task_forward
from metarl.core.layers import MLP


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

    def linearize(
        self, params: Params, obs: Tensor
    ) -> tuple[tuple[Tensor, Tensor], Callable[[Params], tuple[Tensor, Tensor]]]:
        """``(mean, log σ)`` of a task batch and their Jacobian-vector product in ``params``.

        The same numbers as :func:`torch.func.jvp` of :func:`task_forward`, with the hidden
        activations computed once (see :meth:`metarl.core.layers.MLP.linearize`).

        Args:
            params: parameters with a leading task dimension ``n_tasks``.
            obs: observations ``(n_tasks, ..., obs_dim)``, held fixed.

        Returns:
            ``((mean, log_std), jvp)``, both ``(n_tasks, ..., action_dim)`` without a graph, and
            ``jvp``: tangents shaped like ``params`` -> ``(d mean, d log_std)``.
        """
        prefix = "mean."
        mean, mean_jvp = self.mean.linearize(
            {n[len(prefix) :]: p for n, p in params.items() if n.startswith(prefix)}, obs
        )
        log_std = params["log_std"].detach()
        # clamp passes the derivative where log σ >= its floor (as autograd's clamp does)
        passes = (log_std >= self.min_log_std).to(log_std.dtype)
        shape = (log_std.shape[0], *([1] * (mean.dim() - 2)), log_std.shape[-1])

        def jvp(tangents: Params) -> tuple[Tensor, Tensor]:
            d_mean = mean_jvp(
                {n[len(prefix) :]: t for n, t in tangents.items() if n.startswith(prefix)}
            )
            d_log_std = (tangents["log_std"].detach() * passes).reshape(shape)
            return d_mean, d_log_std.expand_as(d_mean)

        clamped = log_std.clamp(min=self.min_log_std).reshape(shape).expand_as(mean)
        return (mean, clamped), jvp

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


def gaussian(mean: Tensor, log_std: Tensor) -> Independent:
    """The diagonal Gaussian ``N(mean, diag(exp(log_std)²))`` over the last dimension."""
    return _diagonal_normal(mean, log_std.exp())


def detach_distribution(dist: Independent) -> Independent:
    """A copy of ``dist`` that no gradient flows through (the "old" policy of TRPO)."""
    return _diagonal_normal(dist.base_dist.loc.detach(), dist.base_dist.scale.detach())


def _diagonal_normal(mean: Tensor, std: Tensor) -> Independent:
    # Argument validation is off: it costs a support check per log_prob in the hot loop.
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)
