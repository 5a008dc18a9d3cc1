"""The linear feature baseline (Duan et al. 2016, "Benchmarking Deep RL"), as used by MAML.

The value of a state is a linear function of hand-made features of its observation and time
step, refitted from scratch on each task's episodes by ridge regression on the returns. It has
no parameters to meta-learn, which is why MAML-TRPO uses it.

Features of step ``t`` with observation ``o`` (clipped to ``[-10, 10]`` as in rllab):
``[o, o^2, s, s^2, s^3, 1]`` with ``s = t / time_scale``. ``time_scale = 100`` is the constant of
rllab and pytorch-maml-rl, whatever the horizon: the cubic term stays of order 1 for the
100-step navigation episodes and reaches 8 for 200-step locomotion episodes. All features of
a padded step are 0, so padded steps neither enter the fit nor get a value.

The ridge system ``(X^T X + reg * I) w = X^T y`` is solved in float64 (the ``s^3`` and ``o^2``
columns make ``X^T X`` badly conditioned in float32). If a solve fails or gives non-finite
weights, it is retried with ``reg`` ten times larger, ``max_tries`` times in all (rllab's
recipe), and a RuntimeError is raised if every try fails.
"""

from __future__ import annotations

import torch
from torch import Tensor

OBSERVATION_CLIP = 10.0


def linear_baseline_features(
    observations: Tensor, masks: Tensor, time_scale: float = 100.0
) -> Tensor:
    """Features of every step.

    Args:
        observations: ``(T, *batch, obs_dim)``.
        masks: ``(T, *batch)``, 1 on valid steps, 0 on padding.
        time_scale: the time feature is ``step_index / time_scale``.

    Returns:
        ``(T, *batch, 2 * obs_dim + 4)``, zero on padded steps.
    """
    if observations.dim() < 2 or masks.shape != observations.shape[:-1]:
        raise ValueError(
            "observations must have shape (T, *batch, obs_dim) and masks (T, *batch); got "
            f"observations {tuple(observations.shape)}, masks {tuple(masks.shape)}"
        )
    if not time_scale > 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    o = observations.clamp(-OBSERVATION_CLIP, OBSERVATION_CLIP)
    steps = torch.arange(observations.shape[0], dtype=o.dtype, device=o.device) / time_scale
    s = steps.reshape(-1, *([1] * masks.dim())).expand(*masks.shape, 1)
    features = torch.cat([o, o**2, s, s**2, s**3, torch.ones_like(s)], dim=-1)
    return features * masks.to(o.dtype).unsqueeze(-1)


def ridge_fit(
    features: Tensor, targets: Tensor, reg_coeff: float = 1e-5, max_tries: int = 5
) -> Tensor:
    """Ridge regression ``argmin_w |X w - y|^2 + reg |w|^2`` for a batch of independent systems.

    Args:
        features: ``(*batch, N, F)``, ``X``; all-zero rows (padding) do not count.
        targets: ``(*batch, N)``, ``y``.
        reg_coeff: the first ridge coefficient; multiplied by 10 after each failed try, per
            system.
        max_tries: number of coefficients tried, ``reg_coeff * 10^k`` for ``k < max_tries``.

    Returns:
        ``(*batch, F)`` float64 weights.

    Raises:
        RuntimeError: if some system gives no finite solution after ``max_tries`` tries.
    """
    if features.dim() < 2 or targets.shape != features.shape[:-1]:
        raise ValueError(
            "features must have shape (*batch, N, F) and targets (*batch, N); got "
            f"features {tuple(features.shape)}, targets {tuple(targets.shape)}"
        )
    if not reg_coeff > 0:
        raise ValueError(f"reg_coeff must be positive, got {reg_coeff}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")
    x = features.to(torch.float64)
    y = targets.to(torch.float64)
    gram = x.transpose(-1, -2) @ x
    rhs = (x.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)

    reg = torch.full(gram.shape[:-2], reg_coeff, dtype=gram.dtype, device=gram.device)
    weights = torch.zeros_like(rhs)
    failed = torch.ones(gram.shape[:-2], dtype=torch.bool, device=gram.device)
    for _ in range(max_tries):
        # All systems are re-solved together (one batched call) and only the ones that had
        # failed take the new solution; the others keep their earlier, less regularised one.
        solution, info = torch.linalg.solve_ex(gram + reg[..., None, None] * eye, rhs)
        ok = (info == 0) & torch.isfinite(solution).all(dim=-1)
        weights = torch.where((failed & ok)[..., None], solution, weights)
        failed = failed & ~ok
        if not bool(failed.any()):
            return weights
        reg = torch.where(failed, reg * 10.0, reg)
    raise RuntimeError(
        f"ridge regression found no finite solution for {int(failed.sum())} system(s) even with "
        f"reg_coeff={reg_coeff * 10 ** (max_tries - 1):g}; check the observations for inf/nan"
    )


class LinearFeatureBaseline:
    """Linear feature baseline fitted on the episodes of one task.

    ``fit`` then ``predict`` on one task's episodes is the pytorch-maml-rl usage; the batched
    :meth:`fit_predict_per_task` fits every task of a meta-batch in one call and keeps no state.
    """

    def __init__(
        self, reg_coeff: float = 1e-5, max_tries: int = 5, time_scale: float = 100.0
    ) -> None:
        """
        Args:
            reg_coeff: first ridge coefficient (1e-5 in rllab and pytorch-maml-rl).
            max_tries: ridge coefficients tried, each ten times the previous one.
            time_scale: the time feature is ``step_index / time_scale``.
        """
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be positive, got {reg_coeff}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.reg_coeff = reg_coeff
        self.max_tries = max_tries
        self.time_scale = time_scale
        self.weight: Tensor | None = None
        """``(2 * obs_dim + 4,)`` float64 weights of the last fit, None before any fit."""

    def fit(self, observations: Tensor, returns: Tensor, masks: Tensor) -> None:
        """Fit the weights on the episodes of one task.

        Args:
            observations: ``(T, B, obs_dim)``, ``B`` episodes of the same task.
            returns: ``(T, B)`` discounted returns (the regression targets).
            masks: ``(T, B)``, 1 on valid steps, 0 on padding.
        """
        _check_shapes(observations, returns, masks, batch_dims=1)
        features = linear_baseline_features(observations, masks, self.time_scale)
        self.weight = ridge_fit(
            features.reshape(-1, features.shape[-1]),
            returns.reshape(-1),
            self.reg_coeff,
            self.max_tries,
        )

    def predict(self, observations: Tensor, masks: Tensor) -> Tensor:
        """Values of the steps of ``observations`` under the last fit.

        Args:
            observations: ``(T, B, obs_dim)``.
            masks: ``(T, B)``.

        Returns:
            ``(T, B)`` values in the dtype of ``observations``, 0 on padding.
        """
        if self.weight is None:
            raise RuntimeError("call fit() before predict()")
        features = linear_baseline_features(observations, masks, self.time_scale)
        if features.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"observations have {observations.shape[-1]} dims but the baseline was fitted on "
                f"{(self.weight.shape[0] - 4) // 2}"
            )
        return (features.to(torch.float64) @ self.weight).to(observations.dtype)

    def fit_predict_per_task(self, observations: Tensor, returns: Tensor, masks: Tensor) -> Tensor:
        """Fit one baseline per task and return each task's values on its own episodes.

        All tasks' ridge systems are solved in one batched call; ``self.weight`` is untouched.

        Args:
            observations: ``(T, n_tasks, E, obs_dim)``, ``E`` episodes per task.
            returns: ``(T, n_tasks, E)``.
            masks: ``(T, n_tasks, E)``.

        Returns:
            ``(T, n_tasks, E)`` values in the dtype of ``observations``, 0 on padding.
        """
        _check_shapes(observations, returns, masks, batch_dims=2)
        features = linear_baseline_features(observations, masks, self.time_scale)
        horizon, n_tasks, episodes, n_features = features.shape
        # (T, n, E, F) -> (n, T * E, F): one regression problem per task.
        per_task = features.permute(1, 0, 2, 3).reshape(n_tasks, horizon * episodes, n_features)
        targets = returns.permute(1, 0, 2).reshape(n_tasks, horizon * episodes)
        weights = ridge_fit(per_task, targets, self.reg_coeff, self.max_tries)
        values = torch.einsum("tnef,nf->tne", features.to(torch.float64), weights)
        return values.to(observations.dtype)


def _check_shapes(observations: Tensor, returns: Tensor, masks: Tensor, batch_dims: int) -> None:
    """Raise ValueError unless ``observations: (T, *batch, D)``, ``returns, masks: (T, *batch)``."""
    names = "(T, B)" if batch_dims == 1 else "(T, n_tasks, E)"
    if observations.dim() != batch_dims + 2:
        raise ValueError(
            f"observations must have shape {names[:-1]}, obs_dim), got {tuple(observations.shape)}"
        )
    for name, tensor in (("returns", returns), ("masks", masks)):
        if tensor.shape != observations.shape[:-1]:
            raise ValueError(
                f"{name} must have shape {names} = {tuple(observations.shape[:-1])}, "
                f"got {tuple(tensor.shape)}"
            )
