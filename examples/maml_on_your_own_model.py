"""MAML on your own model and your own tasks, in about 40 lines.

Any ``nn.Module`` works: metarl runs it functionally (``torch.func``), all tasks of a meta-batch
in one computation. The tasks here are lines ``y = a·x + b``; the model learns an initialisation
from which five gradient steps on 5 points fit a new line.

    python examples/maml_on_your_own_model.py
"""

import torch
from torch import nn

from metarl.algorithms import Problem
from metarl.algorithms.maml import MAML
from metarl.core import InnerStepSize, TaskBatch


def sample_lines(n_tasks: int, gen: torch.Generator, k: int = 5, q: int = 20) -> TaskBatch:
    """``n_tasks`` random lines, ``k`` support and ``q`` query points each: (n_tasks, N, 1)."""
    slope, offset = torch.rand(2, n_tasks, 1, 1, generator=gen) * 4 - 2
    xs, xq = (
        torch.rand(n_tasks, k, 1, generator=gen) * 4 - 2,
        torch.rand(n_tasks, q, 1, generator=gen) * 4 - 2,
    )
    return TaskBatch(xs, slope * xs + offset, xq, slope * xq + offset)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
problem = Problem(task_losses=lambda pred, y: ((pred - y) ** 2).mean(dim=(1, 2)))  # (n_tasks,)
maml = MAML(InnerStepSize(0.05), inner_steps=1)  # second-order meta-gradient
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(1)

window = 0.0  # one batch of 10 tasks is noisy: report the mean of every 100 iterations
for iteration in range(400):
    step = maml.meta_loss(model, sample_lines(10, gen), problem, iteration)
    optimizer.zero_grad()
    step.loss.backward()
    optimizer.step()
    window += step.metrics["meta/query_loss"].item()  # step.loss is Reptile's, iMAML's surrogate
    if (iteration + 1) % 100 == 0:
        print(f"iterations {iteration - 98:3d}-{iteration + 1}: mean query MSE after one step "
              f"{window / 100:.3f}")  # fmt: skip
        window = 0.0

# New lines: the query error before adaptation and after 1 and 5 steps on their 5 points.
test = sample_lines(200, torch.Generator().manual_seed(2))
errors = []
for params in maml.adapt_steps(model, test, problem, steps=5):
    with torch.no_grad():
        predictions = problem.query_predictions(model, params, test)
        errors.append(problem.task_losses(predictions, test.query_y).mean().item())
print(f"test MSE: before {errors[0]:.3f}, after 1 step {errors[1]:.3f}, after 5 {errors[5]:.3f}")
assert errors[5] < errors[0] / 4, "adaptation should cut the error"
