"""What a supervised checkpoint holds beyond the model, and how a trained run is restored.

A checkpoint is ``{"config", "iteration", "model", "algorithm", "optimizer",
"task_generator", "elapsed", "cpu_elapsed", "best"}``: the network's and the algorithm's state
dicts (the latter holds its meta-learned tensors, e.g. learnable step sizes), Adam's state, the
task generator's, the wall and CPU seconds of training, and the best-validated model so far
(``{"iteration", "val_accuracy", "since", "model", "algorithm"}``: :func:`kept_best`; None
before the first validation), with ``"best_since"``, the first iteration whose validations
count (0, or the resume point of a checkpoint written before best models were kept).
Checkpoints written before the algorithm layer kept MAML's step sizes under ``"step_size"``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, make_algorithm
from metarl.reports import ModelChoice, select_model
from metarl.run import load_weights


def algorithm_state(state: dict[str, Any]) -> dict[str, Tensor]:
    """The algorithm's state dict in a checkpoint (also in one written before it had its own)."""
    if "algorithm" in state:
        return state["algorithm"]
    return {f"step_size.{name}": value for name, value in state.get("step_size", {}).items()}


def restore(
    config: Any, state: dict[str, Any], model: nn.Module
) -> tuple[nn.Module, MetaAlgorithm]:
    """``model`` and the config's algorithm with a checkpoint's meta-learned state, on the CPU in
    eval mode (the algorithm's learned step sizes are part of what meta-training produced)."""
    load_weights(model, state["model"], "the checkpoint's model")
    algorithm = make_algorithm(config, model)
    load_weights(algorithm, algorithm_state(state), "the checkpoint's meta-learned step sizes")
    return model.cpu().eval(), algorithm.cpu().eval()


def tested_state(
    state: dict[str, Any], eval_model: str = "last"
) -> tuple[dict[str, Any], ModelChoice]:
    """The checkpoint ``state`` with the model that ``eval_model`` names (``last`` or ``best``,
    the best-validated) in its ``model`` and ``algorithm``, and that choice
    (:func:`~metarl.reports.select_model`)."""
    source, chosen = select_model(state, eval_model)
    if source is state:
        return state, chosen
    # A best entry without its algorithm's state (a damaged file) reaches load_weights, which
    # names what is missing in one line, unless the algorithm has no state to miss.
    return {**state, "model": source["model"], "algorithm": algorithm_state(source)}, chosen


def kept_best(
    best: dict[str, Any] | None,
    score: float,
    iteration: int,
    model: nn.Module,
    algorithm: nn.Module,
    since: int,
) -> dict[str, Any] | None:
    """The best-validated model after a validation that scored ``score`` (higher is better) at
    ``iteration``: a copy of ``model``'s and ``algorithm``'s state if it beats ``best`` (a
    NaN never does; the first of equal scores stays), else ``best``. ``since`` is the first
    iteration whose validations were considered: 0, or where a run from a checkpoint that kept
    no best model resumed."""
    if not math.isfinite(score) or (best is not None and score <= best["val_accuracy"]):
        return best
    return {"iteration": iteration, "val_accuracy": score, "since": since,
            "model": cloned(model), "algorithm": cloned(algorithm)}  # fmt: skip


def cloned(module: nn.Module) -> dict[str, Tensor]:
    """A copy of ``module``'s state dict that later updates leave as it is."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}
