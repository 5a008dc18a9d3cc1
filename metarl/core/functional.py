"""Functional parameters: run any ``nn.Module`` with a dict of tensors, one task or many at once.

MAML needs to evaluate the same network at many parameter points (θ, and every task's θ'ᵢ).
We never rewrite ``module._parameters``; instead parameters travel as a plain
``dict[str, Tensor]`` and the module is run through :func:`torch.func.functional_call`.

A *task batch* is the same dict with a leading task dimension ``n_tasks`` on every tensor
(made by :func:`expand_to_tasks`). Inputs then carry the same leading dimension. Modules whose
layers understand a leading task dimension (``native_task_batch = True``, e.g. the models built
from :mod:`metarl.core.layers`) run it as one batched matmul / grouped convolution; any other
module is run under :func:`torch.func.vmap`, which gives the same numbers, more slowly
(``metarl bench --suite paper --only speed-core``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

Params = dict[str, Tensor]
"""Named parameters of a module, possibly with a leading task dimension."""


def get_params(module: nn.Module) -> Params:
    """The module's parameters as a dict; the module's own tensors (gradients reach them)."""
    return dict(module.named_parameters())


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every element of every tensor is finite (no NaN, no ±inf)."""
    checks = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(checks).all()) if checks else True


def get_buffers(module: nn.Module) -> Params:
    """The module's buffers as a dict (BatchNorm running statistics and the like)."""
    return dict(module.named_buffers())


def expand_to_tasks(params: Params, n_tasks: int) -> Params:
    """Give every tensor a leading task dimension of size ``n_tasks`` (a view, no copy).

    The expansion is differentiable: gradients of the per-task copies sum back into ``params``,
    which is exactly the meta-gradient's average over tasks (up to the loss's own scaling).
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    return {name: p.expand(n_tasks, *p.shape) for name, p in params.items()}


def task_forward(
    module: nn.Module,
    params: Params,
    *inputs: Tensor,
    buffers: Params | None = None,
    **options: Any,
) -> Tensor:
    """Run ``module`` on a task batch: every tensor in ``params`` and ``inputs`` has dim 0 = task.

    Args:
        module: any ``nn.Module``; if it sets ``native_task_batch = True`` its layers handle the
            task dimension themselves, otherwise the call is vectorised with ``torch.func.vmap``.
        params: parameters with a leading task dimension, shape ``(n_tasks, *param.shape)``.
        inputs: inputs with a leading task dimension, shape ``(n_tasks, *per_task_input_shape)``.
        buffers: buffers shared by all tasks (no task dimension); default: the module's own.
        options: keyword arguments of the module's ``forward`` that are not tensors (the same
            for every task), e.g. ``features_only=True``.

    Returns:
        The module's output with a leading task dimension.

    Raises:
        ValueError: an input whose task dimension differs from the parameters'.
        RuntimeError: also when a BatchNorm layer with running statistics meets the vmap path,
            with the fix (:func:`use_batch_statistics`).

    Example, 4 tasks of 10 points through one ``nn.Linear(1, 1)`` with per-task weights::

        >>> import torch
        >>> from metarl.core import expand_to_tasks, get_params, task_forward
        >>> model = torch.nn.Linear(1, 1)
        >>> params = expand_to_tasks(get_params(model), 4)
        >>> params["weight"].shape
        torch.Size([4, 1, 1])
        >>> task_forward(model, params, torch.randn(4, 10, 1)).shape
        torch.Size([4, 10, 1])
    """
    n_tasks = next(iter(params.values())).shape[0] if params else None
    for i, x in enumerate(inputs):
        if n_tasks is not None and (x.ndim == 0 or x.shape[0] != n_tasks):
            raise ValueError(
                f"task_forward: the parameters carry {n_tasks} tasks but input {i} has shape "
                f"{tuple(x.shape)}: every tensor has the task dimension first (a TaskBatch's "
                "support and query sets hold the same tasks)"
            )
    if buffers is None:
        buffers = get_buffers(module)
    if getattr(module, "native_task_batch", False):
        return functional_call(module, (params, buffers), inputs, options)

    def one_task(p: Params, *x: Tensor) -> Tensor:
        return functional_call(module, (p, buffers), x, options)

    try:
        # each task draws its own random numbers (Dropout's masks), from the global generator
        return vmap(one_task, randomness="different")(params, *inputs)
    except RuntimeError as e:
        if "running_mean" in str(e) or "running_var" in str(e):
            raise RuntimeError(
                f"{type(module).__name__} has BatchNorm with running statistics, which every task "
                "would update at once: call metarl.core.use_batch_statistics(model) first (the "
                "MAML paper's BatchNorm: each batch normalised with its own statistics)"
            ) from e
        raise


def single_forward(module: nn.Module, params: Params, *inputs: Tensor) -> Tensor:
    """Run ``module`` at ``params`` (no task dimension) with its own buffers."""
    return functional_call(module, (params, get_buffers(module)), inputs)


def task_batched(module: nn.Module) -> Callable[..., Tensor]:
    """``f(params, *inputs)`` = :func:`task_forward` bound to ``module``."""

    def forward(params: Params, *inputs: Tensor) -> Tensor:
        return task_forward(module, params, *inputs)

    return forward


def use_batch_statistics(module: nn.Module) -> nn.Module:
    """Make every BatchNorm layer normalise with the current batch's statistics, always.

    This is the MAML paper's (transductive) BatchNorm: no running statistics are kept, so the
    inner loop has no buffers to update and train/eval modes behave the same. Modifies the
    module in place and returns it.
    """
    torch.func.replace_all_batch_norm_modules_(module)
    return module
