"""Task-specific initial heads from the support set: ProtoMAML's prototypes and LEOPARD's
generator. Both read the model's features (``forward(x, features_only=True)``) of each task's
support images and write the head ``head.weight (n_tasks, N, d)``, ``head.bias (n_tasks, N)``;
the meta-gradient flows through them into the body."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.algorithms.base import Problem
from metarl.core import Params, TaskBatch, expand_to_tasks, get_params, task_forward

HEAD = ("head.weight", "head.bias")


def check_model(model: nn.Module) -> None:
    """Refuse a model without a linear ``head`` and a ``features_only`` forward (Conv-4 has)."""
    names = dict(model.named_parameters())
    if not all(name in names for name in HEAD):
        raise ValueError(
            f"{type(model).__name__} has no linear `head` (head.weight, head.bias) to initialise "
            "from the support set; ProtoMAML and LEOPARD need a classifier such as Conv-4"
        )
    arguments = inspect.signature(model.forward).parameters.values()
    if not any(a.name == "features_only" or a.kind is a.VAR_KEYWORD for a in arguments):
        raise ValueError(
            f"{type(model).__name__}.forward takes no `features_only` argument: ProtoMAML and "
            "LEOPARD read the head's input features with forward(x, features_only=True), as "
            "Conv-4's does"
        )


def class_means(model: nn.Module, params: Params, batch: TaskBatch) -> Tensor:
    """``(n_tasks, N, d)``: each class's mean support feature, per task.

    Args:
        model: a classifier whose ``forward`` takes ``features_only``.
        params: its parameters, task dimension first (the head's may be anything).
        batch: support images ``(n_tasks, S, ...)`` with labels ``0..N−1``.
    """
    features = task_forward(model, params, batch.support_x, features_only=True)  # (n, S, d)
    n_way = params[HEAD[0]].shape[1]
    onehot = F.one_hot(batch.support_y, n_way).to(features.dtype)  # (n, S, N)
    counts = onehot.sum(dim=1).clamp(min=1.0)  # (n, N)
    return torch.bmm(onehot.transpose(1, 2), features) / counts.unsqueeze(-1)


class PrototypeHead:
    """ProtoMAML's head (Triantafillou et al., ICLR 2020): ``W_k = 2 c_k``, ``b_k = −‖c_k‖²``
    with ``c_k`` the class prototypes, so that the initial logits are a prototypical network's,
    ``−‖f(x) − c_k‖²`` up to a term the softmax ignores."""

    def __call__(
        self, model: nn.Module, params: Params, batch: TaskBatch, problem: Problem
    ) -> Params:
        prototypes = class_means(model, params, batch)
        return {**params, HEAD[0]: 2.0 * prototypes, HEAD[1]: -(prototypes**2).sum(dim=-1)}


def prototype_scores(model: nn.Module, batch: TaskBatch, problem: Problem) -> Tensor:
    """A probe of θ's features: each task's query score (accuracy) when the head is replaced by
    :class:`PrototypeHead` and nothing adapts, i.e. a prototypical network (Snell, Swersky &
    Zemel, NeurIPS 2017) on the meta-learned body, logits ``−‖f(x) − c_k‖²``.

    Args:
        model: a classifier with a linear ``head`` and a ``features_only`` forward (Conv-4).
        batch: support labels ``0..N−1``.
        problem: its ``score`` (a Meta-Dataset problem ignores classes an episode lacks) and
            ``query_inputs`` (BatchNorm policy).

    Returns:
        ``(n_tasks,)`` scores.
    """
    params = expand_to_tasks({n: p.detach() for n, p in get_params(model).items()}, batch.n_tasks)
    with torch.no_grad():
        params = PrototypeHead()(model, params, batch, problem)
        predictions = problem.query_predictions(model, params, batch)
        if problem.score is None:
            raise ValueError("the prototype probe needs a problem with a score (accuracy)")
        return problem.score(predictions, batch.query_y)


class GeneratedHead(nn.Module):
    """LEOPARD's task-conditioned head (Bansal, Jha, Munkhdalai & McCallum, EMNLP 2020): a
    generator maps each class's mean support feature to that class's softmax weights and bias,
    ``[w_k, b_k] = g(c_k)``; the generator is meta-learned with θ.

    Args:
        features: the feature size d.
        hidden: the generator's hidden width (default d).
        seed: the generator's initial weights.
    """

    def __init__(self, features: int, hidden: int | None = None, seed: int = 0) -> None:
        super().__init__()
        from metarl.seeding import seeded

        hidden = features if hidden is None else hidden
        with seeded(seed):
            self.generator = nn.Sequential(
                nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, features + 1)
            )

    def forward(
        self, model: nn.Module, params: Params, batch: TaskBatch, problem: Problem
    ) -> Params:
        out = self.generator(class_means(model, params, batch))  # (n_tasks, N, d + 1)
        return {**params, HEAD[0]: out[..., :-1], HEAD[1]: out[..., -1]}
