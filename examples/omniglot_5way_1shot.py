"""Omniglot 5-way 1-shot with metarl's data loaders, Conv-4 and MAML, step by step.

A short run (200 meta-iterations, under a minute on one core) reaches ~78% on the
test characters after adaptation; the paper's 98.7% takes the full protocol:
``metarl train omniglot-5w1s`` (60,000 iterations). Needs the Omniglot archives
(``metarl data fetch omniglot``).

    python examples/omniglot_5way_1shot.py
"""

import torch

from metarl.algorithms import Problem
from metarl.algorithms.maml import MAML
from metarl.core import InnerStepSize
from metarl.supervised.adaptation import adaptation_curve
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.episodes import fixed_episodes, sample_episodes
from metarl.supervised.data.omniglot import load_omniglot, omniglot_split
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task

images = load_omniglot()  # decoded once, then cached (~/.cache/metarl)
train = omniglot_split(images, "maml", "train")  # 1,100 characters, random 90° rotations
test = omniglot_split(images, "maml", "test")  # 423 other characters
print(f"{train.n_classes} training and {test.n_classes} test characters")

# A Conv-4 on a few 28x28 tasks is fastest on one thread: with more, each small op waits on the
# others (10x slower here when other work shares the cores). `metarl train` does the same.
torch.set_num_threads(1)
torch.manual_seed(0)
model = Conv4(n_classes=5)
problem = Problem(cross_entropy_per_task, accuracy_per_task, "accuracy")
maml = MAML(InnerStepSize(0.4), inner_steps=1)  # the paper's α; second-order meta-gradient
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(0)

for iteration in range(200):
    batch = sample_episodes(train, n_tasks=8, n_way=5, k_shot=1, k_query=1, generator=gen)
    step = maml.meta_loss(model, batch, problem, iteration)
    optimizer.zero_grad()
    step.loss.backward()
    optimizer.step()
    if iteration % 100 == 0:
        print(f"iteration {iteration}: training accuracy {step.metrics['meta/accuracy']:.2f}")

episodes = fixed_episodes(test, 100, n_way=5, k_shot=1, k_query=5, seed=1)
accuracy = adaptation_curve(maml, model, episodes, problem, steps=10)  # (11, 100)
print(f"test accuracy over 100 episodes: {accuracy[0].mean():.1%} before, "
      f"{accuracy[10].mean():.1%} after 10 steps")  # fmt: skip
assert accuracy[10].mean() > 0.5, "even a short run beats chance (20%) by far"
