"""ANIL, "almost no inner loop" (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

Only the head (the last layer) adapts in the inner loop; the body is meta-learned by the outer
loop but held fixed during adaptation, at train and at test time. The result is MAML's
meta-gradient with the body's inner step size set to zero (tested), at a fraction of the inner
loop's cost.

Its evaluation-time variant NIL (:func:`nil_probabilities`) removes the head altogether and
labels queries by cosine similarity of features (``metarl evaluate`` with ``eval_nil: true``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.algorithms.base import Problem
from metarl.algorithms.maml import MAML, step_size_from_config
from metarl.core import TaskBatch, expand_to_tasks, get_params, task_forward


def head_prefix(model: nn.Module) -> str:
    """The name prefix of the model's head: its ``head`` submodule if it has one (Conv-4),
    else the last module registered that holds parameters (an ``nn.Sequential``'s last linear
    layer). Registration order is not call order: a model that defines its output layer before
    its body must name it ``head``, and any other model without one is warned which layer
    ANIL adapts."""
    if isinstance(getattr(model, "head", None), nn.Module):
        return "head."
    owners = [name for name, m in model.named_modules() if list(m.parameters(recurse=False))]
    if not owners or owners[-1] == "":
        raise ValueError(f"{type(model).__name__} has no head layer to adapt")
    if not isinstance(model, nn.Sequential):  # a Sequential calls its layers in their order
        warnings.warn(
            f"ANIL adapts {owners[-1]!r}, the last layer {type(model).__name__} registers; "
            "if that is not its output layer, name the output layer `head`",
            stacklevel=2,
        )
    return owners[-1] + "."


def is_head(model: nn.Module) -> Callable[[str], bool]:
    """``name -> bool``: whether a parameter belongs to the model's head."""
    prefix = head_prefix(model)
    return lambda name: name.startswith(prefix)


LABEL = "ANIL"
"""How tables and plots name the algorithm."""


def from_config(config: Any, model: nn.Module) -> MAML:
    """ANIL with a config's inner loop (``inner_lr``, ``inner_steps``, ``meta_gradient``...)."""
    return MAML(
        step_size_from_config(config, model), config.inner_steps, config.meta_gradient,
        config.fd_epsilon, adapted=is_head(model),
    )  # fmt: skip


def nil_probabilities(model: nn.Module, batch: TaskBatch, problem: Problem) -> Tensor:
    """NIL, "no inner loop" (Raghu et al. 2020, §5): the head is removed; each query is labelled
    by the support labels weighted by the softmax of its cosine similarities to the support
    examples' features (the head's input), ``p(y | q) = Σ_j softmax_j(cos(f(q), f(s_j))) y_j``.

    Args:
        model: a classifier whose ``forward`` takes ``features_only`` (Conv-4).
        batch: support labels ``0..N−1``.
        problem: its ``query_inputs`` (BatchNorm policy) apply to the query pass.

    Returns:
        ``(n_tasks, Q, N)`` class probabilities of each query.
    """
    params = expand_to_tasks({n: p.detach() for n, p in get_params(model).items()}, batch.n_tasks)
    with torch.no_grad():
        support = task_forward(model, params, batch.support_x, features_only=True)
        inputs = (batch.query_x,) if problem.query_inputs is None else problem.query_inputs(batch)
        query = task_forward(model, params, *inputs, features_only=True)
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
        labels = F.one_hot(batch.support_y, int(batch.support_y.max()) + 1).to(cosine.dtype)
        return cosine.softmax(dim=-1) @ labels
