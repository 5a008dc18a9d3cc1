"""The interface of a supervised meta-learning algorithm, and what it is given.

An algorithm sees a model (any ``nn.Module``, run through :mod:`metarl.core`), a meta-batch of
tasks (:class:`~metarl.core.TaskBatch`) and a :class:`Problem` that says how a prediction is
scored. It answers two questions, and the training loop, the evaluation and the benchmarks ask
nothing else:

* :meth:`MetaAlgorithm.meta_loss` — the outer objective of one meta-batch. The trainer
  backpropagates it and takes an optimiser step on the model's parameters and the algorithm's
  own (learnable step sizes, a head generator, ...). An algorithm whose update is not the
  gradient of a loss (Reptile's ``θ − φ``, iMAML's implicit gradient) returns a surrogate whose
  gradient is that update.
* :meth:`MetaAlgorithm.adapt_steps` — how it adapts to a new task at test time.

To add an algorithm: subclass :class:`MetaAlgorithm` in a module of this package, give the
module a ``from_config``, a ``LABEL`` and, if needed, an ``OWN_SETTINGS`` (an algorithm that
needs an inner step also calls :func:`require_inner_steps`), and register it in
``metarl.algorithms._MODULES`` (docs/architecture.md).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from metarl.core import InnerStepSize, Params, TaskBatch, task_forward
from metarl.core.adapt import LossFn


@dataclass(frozen=True)
class Problem:
    """How a model is scored on a task batch; the same for every algorithm.

    Attributes:
        task_losses: ``(predictions, targets) -> (n_tasks,)``, the loss the inner loop descends
            on the support set and the outer loop averages on the query set.
        score: ``(predictions, targets) -> (n_tasks,)``, the number reported for a task (e.g.
            accuracy); None: the loss itself.
        score_name: the score's name in logs and reports (``"accuracy"``); None without a score.
        query_inputs: the model's inputs of a query pass; None: ``(query_x,)``. A model whose
            query predictions also depend on the support set (BatchNorm with the support set's
            statistics) gets ``(query_x, support_x)``.
    """

    task_losses: Callable[[Tensor, Tensor], Tensor]
    score: Callable[[Tensor, Tensor], Tensor] | None = None
    score_name: str | None = None
    query_inputs: Callable[[TaskBatch], tuple[Tensor, ...]] | None = None

    def losses(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """``(n_tasks,)``: :attr:`task_losses`, checked to give one loss per task.

        Raises:
            ValueError: ``task_losses`` returned another shape (a loss averaged over the tasks
                too would shrink every inner step by the number of tasks).
        """
        losses = self.task_losses(predictions, targets)
        return _one_per_task(losses, targets, "task_losses")

    def support_loss(self, model: nn.Module, batch: TaskBatch) -> LossFn:
        """``params -> (n_tasks,)`` support losses, for task-batched parameters."""

        def loss(params: Params) -> Tensor:
            return self.losses(task_forward(model, params, batch.support_x), batch.support_y)

        return loss

    def query_predictions(self, model: nn.Module, params: Params, batch: TaskBatch) -> Tensor:
        """The model's predictions on the query sets at task-batched ``params``."""
        inputs = (batch.query_x,) if self.query_inputs is None else self.query_inputs(batch)
        return task_forward(model, params, *inputs)

    def query_score(self, predictions: Tensor, batch: TaskBatch) -> Tensor:
        """``(n_tasks,)`` the reported number: :attr:`score`, else the loss."""
        if self.score is None:
            return self.losses(predictions, batch.query_y)
        return _one_per_task(self.score(predictions, batch.query_y), batch.query_y, "score")

    def score_metrics(self, predictions: Tensor, batch: TaskBatch) -> dict[str, Tensor]:
        """``{"meta/<score name>": mean score}`` for the training log; empty without a score."""
        if self.score is None:
            return {}
        with torch.no_grad():
            return {f"meta/{self.score_name}": self.score(predictions, batch.query_y).mean()}


def _one_per_task(values: Tensor, targets: Tensor, name: str) -> Tensor:
    """``values`` if it holds one number per task (the targets' first dimension)."""
    n_tasks = targets.shape[0]
    if values.shape != (n_tasks,):
        raise ValueError(
            f"Problem.{name} returned shape {tuple(values.shape)} for {n_tasks} tasks: it must "
            f"give one value per task, shape ({n_tasks},); reduce over each task's examples "
            "only, e.g. ((p - y) ** 2).mean(dim=(1, 2))"
        )
    return values


@dataclass(frozen=True)
class OwnSettings:
    """The shared config settings an algorithm decides itself, and why.

    A config that sets one of them to anything but its default is refused: the run would
    record the value in config.yaml without it having any effect.

    Attributes:
        meta_gradient: why ``meta_gradient`` does not apply (the meta-update does not
            differentiate through the inner loop); None: it applies.
        learn_inner_lr: why ``learn_inner_lr`` does not apply (the algorithm sets its inner step
            sizes itself); None: it applies.
        needs_inner_steps: the algorithm is undefined with ``inner_steps: 0`` (MAML with none
            is pretraining, which is defined).
    """

    meta_gradient: str | None = None
    learn_inner_lr: str | None = None
    needs_inner_steps: bool = False


def require_inner_steps(steps: int, name: str) -> None:
    """Refuse fewer than one inner step, for an algorithm undefined without one (its
    ``OwnSettings.needs_inner_steps``)."""
    if steps < 1:
        raise ValueError(f"{name} needs at least one inner step, got {steps}")


class MetaLoss(NamedTuple):
    """The outer objective of one meta-batch.

    Attributes:
        loss: scalar; its gradient with respect to the meta-parameters is the meta-update
            (Reptile's and iMAML's is a surrogate whose value measures nothing: read
            ``metrics["meta/query_loss"]``, which every algorithm logs).
        metrics: detached scalars for the log, under namespaced keys (``meta/query_loss``,
            ``inner/support_loss_pre``, ``meta/<score name>``).
    """

    loss: Tensor
    metrics: dict[str, Tensor]


StepSizes = float | Sequence[float] | InnerStepSize
"""A test-time step size: one α, one per step (the last repeats), or a step-size module."""


class MetaAlgorithm(nn.Module, abc.ABC):
    """A supervised meta-learning algorithm on the one core.

    The module holds the algorithm's own meta-learned tensors as parameters (for MAML with
    learnable step sizes, the step sizes); the trainer optimises them with the model's and
    saves them in the checkpoint through ``state_dict``.
    """

    @abc.abstractmethod
    def meta_loss(
        self, model: nn.Module, batch: TaskBatch, problem: Problem, iteration: int
    ) -> MetaLoss:
        """The outer objective of ``batch`` at the model's current parameters.

        Args:
            model: the meta-learned network θ (its own parameters; gradients reach them).
            batch: ``n_tasks`` tasks with support and query sets.
            problem: how predictions are scored.
            iteration: the meta-iteration (0-based), for schedules that anneal.
        """

    @abc.abstractmethod
    def adapt_steps(
        self,
        model: nn.Module,
        batch: TaskBatch,
        problem: Problem,
        steps: int,
        step_sizes: StepSizes | None = None,
    ) -> Iterator[Params]:
        """Test-time adaptation to each task's support set, step by step.

        Yields the task-batched parameters (``(n_tasks, *shape)``, detached) before adaptation
        and after each of ``steps`` steps: ``steps + 1`` dicts. The model is not modified.

        Args:
            step_sizes: the test-time step size; None: the algorithm's own (meta-learned or
                configured) step size.
        """
