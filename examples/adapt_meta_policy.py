"""Adapt a trained meta-policy to a new goal and roll it out, with a picture.

Trains a small 2D-navigation meta-policy first (about 30 s; pass a run directory to use yours,
e.g. one of `metarl train navigation`), adapts it to a goal it never saw with one and two
policy-gradient steps, and draws its paths before and after in gymnasium's own environment.

    python examples/adapt_meta_policy.py [RUN_DIR]
"""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from matplotlib.figure import Figure

import metarl

out = Path("examples_output")
if len(sys.argv) > 1:
    run_dir = Path(sys.argv[1])
else:
    small = {"iterations": 15, "meta_batch_size": 10, "episodes_per_task": 10,
             "fisher_subsample": 5, "fisher_product": "gauss_newton",
             "tensorboard": False}  # fmt: skip
    run_dir = metarl.train("navigation", small, out=out / "navigation", progress=False).run_dir
run = metarl.load_run(run_dir)  # the model `metarl evaluate` tests (the best of training)
goal = {"goal": np.array([0.35, -0.25])}
adaptation = run.adapt_policy(goal, steps=2, episodes=20, seed=0)
print("mean return after 0, 1, 2 steps:", [round(r, 1) for r in adaptation.returns])

fig = Figure(figsize=(4.5, 4.5))
ax = fig.subplots()
env = gym.make("metarl/Navigation2D-v0", task=goal)
for step, params in enumerate(adaptation.params):
    obs, _ = env.reset(seed=0)
    path = [obs]
    for _ in range(100):
        obs, reward, terminated, truncated, _ = env.step(run.model.act(obs, params=params))
        path.append(obs)
        if terminated or truncated:
            break
    xy = np.array(path)
    ax.plot(xy[:, 0], xy[:, 1], marker=".", ms=3, label=f"{step} step{'s' if step != 1 else ''}")
ax.scatter(*goal["goal"], marker="*", s=200, color="red", label="goal", zorder=5)
ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), xlabel="x", ylabel="y", aspect="equal")
ax.legend(loc="upper left", fontsize=8)
out.mkdir(exist_ok=True)
fig.tight_layout()
fig.savefig(out / "adapted_paths.png", dpi=100)
print(f"wrote {out / 'adapted_paths.png'}")
