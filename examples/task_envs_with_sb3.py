"""The task environments with gymnasium's vector API and Stable-Baselines3.

Every metarl environment is a gymnasium environment that takes a task: ``gym.make(id, task=...)``
pins one, ``reset(options={"task": ...})`` switches, and without one every reset draws a task
from the distribution (what the paper's "pretrained" baseline trains on).

    python examples/task_envs_with_sb3.py
"""

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import metarl.envs  # noqa: F401 - `import metarl` registers the ids too

# gymnasium's own vector environment, four copies, a new goal at every reset
envs = gym.make_vec("metarl/Navigation2D-v0", num_envs=4, vectorization_mode="sync")
obs, _ = envs.reset(seed=0)
print("gymnasium vector env:", obs.shape)
envs.close()

# The tasks: draw some, pin one
env = gym.make("metarl/HalfCheetahVel-v0")
tasks = env.unwrapped.sample_tasks(3, np.random.default_rng(0))
print("three HalfCheetah velocity tasks:", [round(t["velocity"], 2) for t in tasks])
env.reset(options={"task": tasks[0]})
print("pinned:", env.unwrapped.task)

# Stable-Baselines3's standard idiom, on one pinned task
vec = make_vec_env("metarl/Navigation2D-v0", n_envs=4, seed=0,
                   env_kwargs={"task": {"goal": [0.3, 0.3]}, "horizon": 50})  # fmt: skip
model = PPO("MlpPolicy", vec, n_steps=256, batch_size=256, seed=0, verbose=0)
before, _ = evaluate_policy(model, vec, n_eval_episodes=8)
model.learn(total_timesteps=10_000)
after, _ = evaluate_policy(model, vec, n_eval_episodes=8)
print(f"PPO on one goal: return {before:.1f} before, {after:.1f} after 10,000 steps")
assert after > before
