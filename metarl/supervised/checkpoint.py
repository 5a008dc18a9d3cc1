"""What a supervised checkpoint holds beyond the model, and how a trained run is restored.

A checkpoint is ``{"config", "iteration", "model", "algorithm", "optimizer",
"task_generator", "elapsed", "cpu_elapsed"}``: the network's and the algorithm's state dicts
(the latter holds its meta-learned tensors, e.g. learnable step sizes), Adam's state, the task
generator's, and the wall and CPU seconds of training.
Checkpoints written before the algorithm layer kept MAML's step sizes under ``"step_size"``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from metarl.algorithms import MetaAlgorithm, make_algorithm


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
