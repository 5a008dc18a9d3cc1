"""ProtoMAML on Meta-Dataset-style episodes: variable ways and class-imbalanced shots, drawn
from two datasets at once (Triantafillou et al., ICLR 2020).

Training episodes come from Omniglot's training characters and MNIST's digits 0-4; test episodes
from Omniglot's test characters and MNIST's digits 5-9, scored per source. One Conv-4 with 50
outputs (the most ways an episode has) serves every episode: each is scored over its own
classes only. A short run (100 episodes, about a minute on one core). Needs the Omniglot and
MNIST files (``metarl data fetch omniglot`` and ``metarl data fetch mnist``).

    python examples/meta_dataset_episodes.py
"""

import torch

from metarl.algorithms import Problem
from metarl.algorithms.heads import PrototypeHead
from metarl.algorithms.maml import MAML
from metarl.core import InnerStepSize
from metarl.supervised.adaptation import adaptation_curve
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.meta_dataset import EpisodeSpec, sample_meta_dataset_episode
from metarl.supervised.data.mnist import mnist_split
from metarl.supervised.data.omniglot import load_omniglot, omniglot_split
from metarl.supervised.tasks import (
    variable_way_accuracy_per_task,
    variable_way_cross_entropy_per_task,
)

omniglot = load_omniglot()
train = {"omniglot": omniglot_split(omniglot, "maml", "train"),
         "mnist": mnist_split("mnist", [0, 1, 2, 3, 4], "train")}  # fmt: skip
test = {"omniglot": omniglot_split(omniglot, "maml", "test"),
        "mnist": mnist_split("mnist", [0, 1, 2, 3, 4], "test")}  # fmt: skip
spec = EpisodeSpec()  # the paper's: 5-50 ways, at most 10 queries per class, 500 shots in all

torch.set_num_threads(1)
torch.manual_seed(0)
model = Conv4(n_classes=spec.max_ways)
problem = Problem(variable_way_cross_entropy_per_task, variable_way_accuracy_per_task, "accuracy")
# ProtoMAML: the head starts at the support set's prototypes; first-order, as the paper
proto_maml = MAML(InnerStepSize(0.1), inner_steps=1, mode="first_order", head=PrototypeHead())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(0)

for iteration in range(100):
    episode = sample_meta_dataset_episode(train, spec, gen, image_shape=(1, 28, 28))
    step = proto_maml.meta_loss(model, episode.batch, problem, iteration)
    optimizer.zero_grad()
    step.loss.backward()
    optimizer.step()
    if iteration % 25 == 0:
        ways, shots = episode.description.classes.numel(), int(episode.description.shots.sum())
        print(f"iteration {iteration}: {episode.source} {ways}-way, {shots} shots; "
              f"query accuracy {step.metrics['meta/accuracy']:.2f}")  # fmt: skip

test_gen = torch.Generator().manual_seed(1)
scores: dict[str, list[torch.Tensor]] = {name: [] for name in test}
for _ in range(40):
    episode = sample_meta_dataset_episode(test, spec, test_gen, image_shape=(1, 28, 28))
    accuracy = adaptation_curve(proto_maml, model, episode.batch, problem, steps=1)  # (2, 1)
    scores[episode.source].append(accuracy[:, 0])
for name, values in scores.items():
    before, after = torch.stack(values).mean(dim=0).tolist()
    print(f"{name}, {len(values)} test episodes: {before:.1%} from the prototypes, "
          f"{after:.1%} after one step")  # fmt: skip
    assert after > 1 / spec.min_ways, "better than chance"
