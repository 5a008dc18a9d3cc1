"""What a supervised checkpoint holds beyond the model, and how a trained run is restored.

A checkpoint is ``{"config", "iteration", "model", "algorithm", "optimizer",
"task_generator", "elapsed", "cpu_elapsed", "best"}``: the network's and the algorithm's state
dicts (the latter holds its meta-learned tensors, e.g. learnable step sizes), Adam's state, the
task generator's, the wall and CPU seconds of training, and the best-validated model so far
(``{"iteration", "val_accuracy", "model", "algorithm"}``; None without validations).
Checkpoints written before the algorithm layer kept MAML's step sizes under ``"step_size"``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, make_algorithm
from metarl.reports import ModelChoice


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
    model.load_state_dict(state["model"])
    algorithm = make_algorithm(config, model)
    algorithm.load_state_dict(algorithm_state(state))
    return model.cpu().eval(), algorithm.cpu().eval()


def tested_state(
    state: dict[str, Any], eval_model: str = "last"
) -> tuple[dict[str, Any], ModelChoice]:
    """The checkpoint ``state`` with the model that ``eval_model`` names (``last`` or ``best``)
    in its ``model`` and ``algorithm``, and that choice.

    ``best`` takes the best-validated model the trainer kept; a checkpoint without one (no
    validations, or written before they were kept) falls back to the last model and says so.
    """
    iteration, best = state["iteration"], state.get("best")
    if eval_model == "last" or best is None:
        note = "no best-validated model in the checkpoint" if eval_model == "best" else ""
        return state, ModelChoice("last", iteration, iteration, note=note)
    chosen = {**state, "model": best["model"], "algorithm": best["algorithm"]}
    return chosen, ModelChoice(
        "best", best["iteration"], iteration, validation_accuracy=best["val_accuracy"]
    )
