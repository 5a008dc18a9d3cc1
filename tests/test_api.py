"""The Python API on its own terms: train and evaluate from Python, load the model evaluate
tests, adapt to a new task (supervised and by sampling), act with a policy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl
from metarl.config import ConfigError

SINUSOID = {"iterations": 300, "log_every": 100, "checkpoint_every": 300, "tensorboard": False,
            "baseline_iterations": 50, "eval_tasks": 30, "eval_shots": [10],
            "eval_steps": 2}  # fmt: skip
NAVIGATION = {"iterations": 2, "meta_batch_size": 4, "episodes_per_task": 4, "horizon": 20,
              "eval_tasks": 4, "eval_episodes_per_task": 4, "eval_steps": 2,
              "tensorboard": False, "checkpoint_every": 1}  # fmt: skip


def test_train_evaluate_and_adapt_a_sinusoid_model_from_python(tmp_path):
    result = metarl.train("sinusoid", SINUSOID, out=tmp_path / "run", evaluate=True,
                          progress=False)  # fmt: skip
    assert result.run_dir == tmp_path / "run" and result.report is not None
    assert result.report == metarl.read_report(tmp_path / "run")
    run = metarl.load_run(result.run_dir)
    assert run.which == "last" and run.iteration == 300
    # One task's support set: the adapted parameters are those of plain gradient steps
    # (an independent reference: torch.optim.SGD on a copy of the network).
    x = torch.linspace(-5, 5, 10).unsqueeze(-1)
    y = 2.0 * torch.sin(x - 0.5)
    adapted = run.adapt(x, y, steps=3, step_size=0.01)
    net = copy.deepcopy(run.model)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        optimizer.step()
    for name, p in net.named_parameters():
        torch.testing.assert_close(adapted[name], p.detach())
    query = torch.tensor([[0.5], [1.5]])
    torch.testing.assert_close(run.predict(query, adapted), net(query).detach())
    assert not torch.allclose(run.predict(query), run.predict(query, adapted))
    with pytest.raises(ConfigError, match="keeps no best model .its training never validates"):
        metarl.load_run(result.run_dir, which="best")
    with pytest.raises(ConfigError, match="this is a supervised run: use adapt"):
        run.adapt_policy({"goal": [0.1, 0.1]})
    with pytest.raises(ConfigError, match="adapt.steps=-1.: give a number of steps ≥ 0"):
        run.adapt(x, y, steps=-1)
    with pytest.raises(ConfigError, match="which='Best': give 'best' or 'last'"):
        metarl.load_run(result.run_dir, which="Best")  # type: ignore[arg-type]
    for name, p in run.model.named_parameters():  # zero steps: θ itself
        torch.testing.assert_close(run.adapt(x, y, steps=0)[name], p.detach())
    # evaluate() from Python with an evaluation setting
    report = metarl.evaluate(result.run_dir, {"eval_steps": 1}, progress=False)
    assert report.curve("meta_learned", "K=10").steps == [0, 1]


def test_a_meta_policy_adapts_to_a_new_goal_and_acts(tmp_path):
    result = metarl.train("navigation", NAVIGATION, out=tmp_path / "run", progress=False)
    run = metarl.load_run(result.run_dir)
    assert run.which == "best" and run.algorithm is None
    goal = {"goal": np.array([0.3, -0.2])}
    adaptation = run.adapt_policy(goal, steps=2, episodes=6, seed=1)
    assert len(adaptation.params) == len(adaptation.returns) == 3
    assert all(np.isfinite(adaptation.returns))
    assert run.adapt_policy(goal, steps=2, episodes=6, seed=1).returns == adaptation.returns
    policy = run.model
    obs = np.zeros(2, dtype=np.float32)
    action = policy.act(obs)
    mean, _ = policy(torch.as_tensor(obs))
    np.testing.assert_allclose(action, mean.detach().numpy())
    adapted_action = policy.act(obs, params=adaptation.params[-1])
    assert adapted_action.shape == (2,) and not np.allclose(adapted_action, action)
    sampled = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2,) and not np.allclose(sampled, action)
    # roll the adapted policy out in gymnasium's own environment
    import gymnasium as gym

    env = gym.make("metarl/Navigation2D-v0", task=goal)
    obs, _ = env.reset(seed=0)
    scale = env.unwrapped.action_scale
    for _ in range(5):  # the point moves by the policy's clipped action; reward −‖x − goal‖
        action = policy.act(obs, params=adaptation.params[-1])
        moved, reward, *_ = env.step(action)
        np.testing.assert_allclose(moved, obs + scale * np.clip(action, -1, 1), atol=1e-6)
        assert reward == pytest.approx(-np.linalg.norm(moved - goal["goal"]), abs=1e-6)
        obs = moved
    with pytest.raises(ConfigError, match="task .*needs"):
        run.adapt_policy({"velocity": 1.0})
    with pytest.raises(ConfigError, match="this is a meta-RL run: use adapt_policy"):
        run.adapt(torch.zeros(4, 2), torch.zeros(4, 2))
    assert metarl.load_run(result.run_dir, which="last").iteration == 2


def test_training_from_python_refuses_what_the_command_refuses(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'iteration'"):
        metarl.train("sinusoid", {"iteration": 5}, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    metarl.train("sinusoid", ["iterations=100", "log_every=50", "checkpoint_every=100"],
                 out=tmp_path / "y", progress=False)  # fmt: skip
    resumed = metarl.train("sinusoid", {"iterations": 200}, resume=tmp_path / "y",
                           progress=False)  # fmt: skip
    assert metarl.load_run(resumed.run_dir).iteration == 200
    with pytest.raises(ConfigError, match="a resumed run keeps its config"):
        metarl.train("sinusoid", {"meta_lr": 0.1}, resume=tmp_path / "y", progress=False)
    with pytest.raises(ConfigError, match="give a mapping or a list of key=value, not a string"):
        metarl.train("sinusoid", "iterations=300", resume=tmp_path / "y", progress=False)
    # A run started from a YAML file resumes from that file's name too, and only its own run.
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("experiment: sinusoid\niterations: 100\nlog_every: 50\n")
    metarl.train(yaml_file, out=tmp_path / "z", progress=False)
    resumed = metarl.train(yaml_file, {"iterations": 150}, resume=tmp_path / "z", progress=False)
    assert metarl.load_run(resumed.run_dir).iteration == 150
    with pytest.raises(metarl.RunError, match="is a run of 'sinusoid', not 'navigation'"):
        metarl.train("navigation", resume=tmp_path / "z", progress=False)
    with pytest.raises(ConfigError, match="give out or resume, not both"):
        metarl.train("sinusoid", out=tmp_path / "w", resume=tmp_path / "z", progress=False)
    # A YAML file without an experiment key, named by an override; a Path as the experiment.
    bare = tmp_path / "bare.yaml"
    bare.write_text("iterations: 30\n")
    assert metarl.load_config(bare, {"experiment": "sinusoid"}).iterations == 30
    assert metarl.load_config(Path("sinusoid")).experiment == "sinusoid"


def test_the_package_lists_its_public_names_and_exports_its_errors(tmp_path):
    assert set(metarl.__all__) <= set(dir(metarl))
    assert "importlib" not in dir(metarl)
    for name in metarl.__all__:
        assert getattr(metarl, name) is not None, name
    from metarl.reports import ReportError

    assert metarl.ReportError is ReportError
    (tmp_path / "eval.json").write_text("{")
    with pytest.raises(metarl.ReportError, match="is not valid JSON"):
        metarl.read_report(tmp_path)
