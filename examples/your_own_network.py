"""A network of your own in the paper's Omniglot protocol, by name, from Python or the CLI.

Registering a builder under a name is all it takes: ``network: NAME`` then meta-trains,
evaluates and loads it like the built-in Conv-4, with the protocol's data, episodes,
validation, checkpoints and reports. Importing this file registers the network; running it
trains a short run (200 meta-iterations, seconds) and evaluates it. The command line reaches
it the same way (needs the Omniglot archives: ``metarl data fetch omniglot``):

    python examples/your_own_network.py
    metarl --import examples/your_own_network.py train omniglot-5w1s --set network=small-cnn
    metarl --import examples/your_own_network.py evaluate examples_output/small-cnn
"""

from torch import nn

import metarl
from metarl.supervised.networks import register_network


def small_cnn(input_shape: tuple[int, int, int], n_outputs: int) -> nn.Module:
    """Two stride-2 convolutions of 32 channels, then a linear head: ``(B, C, H, W) -> (B, N)``.

    BatchNorm normalises every batch by itself (no running statistics), as MAML's does.
    """
    channels, height, width = input_shape
    blocks = []
    for _ in range(2):
        blocks += [nn.Conv2d(channels, 32, 3, stride=2, padding=1),
                   nn.BatchNorm2d(32, track_running_stats=False), nn.ReLU()]  # fmt: skip
        channels, height, width = 32, (height + 1) // 2, (width + 1) // 2
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(32 * height * width, n_outputs))


register_network("small-cnn", small_cnn)

if __name__ == "__main__":
    short = {"network": "small-cnn", "iterations": 200, "meta_batch_size": 8, "val_every": 0,
             "eval_tasks": 100, "log_every": 20, "checkpoint_every": 200,
             "tensorboard": False}  # fmt: skip
    done = metarl.train("omniglot-5w1s", short, out="examples_output/small-cnn", progress=False)
    report = metarl.evaluate(done.run_dir, progress=False)
    curve = report.curves[0]  # MAML's accuracy after 0..10 steps on 100 test episodes
    print(f"small-cnn, 200 iterations: {curve.mean[0]:.1%} before adaptation, "
          f"{curve.mean[-1]:.1%} after {len(curve.mean) - 1} steps")  # fmt: skip
    run = metarl.load_run(done.run_dir)  # the registered builder rebuilds it for loading too
    assert sum(p.numel() for p in run.model.parameters()) == sum(
        p.numel() for p in small_cnn((1, 28, 28), 5).parameters()
    )
    assert curve.mean[-1] > 0.4, "even a short run beats chance (20%) by far"
