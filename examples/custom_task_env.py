"""A task environment of your own, trained with MAML-TRPO.

A batched simulator of the tasks (here: move a point on a line to a target), registered under a
name, is all the meta-RL trainer needs; everything else (sampling, the inner loop, TRPO,
evaluation) comes with metarl. Importing this file registers the environment; running it
trains a tiny run and evaluates it. The command line reaches the environment the same way:

    python examples/custom_task_env.py
    metarl --import examples/custom_task_env.py evaluate examples_output/point-on-a-line
"""

from typing import Any

import numpy as np

import metarl
from metarl.envs import BatchedTaskEnv, BatchStep
from metarl.rl.task_envs import register_batched_env


class PointOnALine(BatchedTaskEnv):
    """``N`` points on a line, each with its own target in [−1, 1]; reward −|x − target|."""

    def __init__(self, num_envs: int, horizon: int) -> None:
        super().__init__(num_envs, observation_dim=1, action_dim=1, horizon=horizon)
        self.targets = np.zeros(num_envs)
        self.x = np.zeros(num_envs)
        self.t = 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"target": float(v)} for v in rng.uniform(-1.0, 1.0, size=n)]

    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._check_tasks(tasks)
        self.targets = np.array([task["target"] for task in tasks], dtype=np.float64)

    def task_array(self, tasks: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[task["target"]] for task in tasks])

    def reset(self, indices=None) -> np.ndarray:
        self.x[self._reset_indices(indices)] = 0.0
        self.t = 0
        return self.x[:, None].astype(np.float32)

    def step(self, actions: np.ndarray) -> BatchStep:
        actions = self._check_actions(actions)
        self.x = self.x + 0.1 * np.clip(actions[:, 0], -1.0, 1.0)
        self.t += 1
        reward = -np.abs(self.x - self.targets)
        done = np.full(self.num_envs, self.t >= self.horizon)
        return BatchStep(self.x[:, None].astype(np.float32), reward.astype(np.float32),
                         np.zeros(self.num_envs, dtype=bool), done)  # fmt: skip


register_batched_env("point-on-a-line", lambda num_envs, horizon: PointOnALine(num_envs, horizon))

if __name__ == "__main__":
    settings = {"env": "point-on-a-line", "horizon": 20, "hidden_sizes": [32, 32],
                "iterations": 20, "meta_batch_size": 10, "episodes_per_task": 10,
                "eval_tasks": 10, "eval_episodes_per_task": 10, "eval_steps": 2,
                "tensorboard": False}  # fmt: skip
    result = metarl.train("navigation", settings, out="examples_output/point-on-a-line",
                          evaluate=True, progress=False)  # fmt: skip
    maml = result.report.curve("meta_learned")
    print("return after 0, 1, 2 adaptation steps:", [round(v, 2) for v in maml.mean])
