"""MAML-TRPO end to end on small settings: learning, exact resume, evaluation, bad input."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.distributions import Normal

import metarl.rl.evaluate as rl_evaluate
from metarl.cli import main
from metarl.config import ConfigError
from metarl.core import get_params
from metarl.envs import Navigation2DEnv
from metarl.experiments import load_config
from metarl.gap import gap_closed
from metarl.reports import read_report
from metarl.results_table import results_table
from metarl.rl.evaluate import adaptation_curve, baseline_fingerprint
from metarl.rl.policy import build_policy
from metarl.rl.task_envs import make_batched_env
from metarl.rl.trainer import train
from metarl.run import CHECKPOINT, atomic_torch_save, load_checkpoint, read_metrics
from metarl.trained import LoadedRun, load_run

# Small but real: 100-step episodes would make the tests slow, 30 steps reach every goal.
SMALL = [
    "horizon=30", "meta_batch_size=8", "episodes_per_task=8", "hidden_sizes=[32,32]",
    "tensorboard=false", "eval_tasks=6", "eval_episodes_per_task=6", "eval_steps=2",
    "eval_trajectory_goals=2", "fisher_subsample=2",
]  # fmt: skip


def _small(*extra: str):
    return load_config("navigation", [*SMALL, *extra])


def _post_adaptation_return(config, policy) -> float:
    """Mean return after one test-time step on 16 fixed tasks (independent of training noise)."""
    env = make_batched_env(config.env, 16 * 10, config.horizon)
    tasks = env.sample_tasks(16, np.random.default_rng(123))
    probe = load_config("navigation", [*SMALL, "eval_episodes_per_task=10", "eval_steps=1"])
    curve = adaptation_curve(policy, env, tasks, probe, torch.Generator().manual_seed(0))
    return float(curve.returns[1].mean())


def test_short_training_improves_the_post_adaptation_return(tmp_path: Path) -> None:
    config = _small("iterations=8", "checkpoint_every=4", "seed=3")
    before = _post_adaptation_return(config, build_policy(config))
    policy = train(config, tmp_path, progress=False)
    after = _post_adaptation_return(config, policy)
    assert after > before + 1.0, (before, after)
    metrics = read_metrics(tmp_path)
    assert [m["iteration"] for m in metrics] == list(range(1, 9))
    for key in (
        "returns/pre_adaptation", "returns/post_adaptation", "meta/surrogate_before",
        "meta/surrogate_after", "meta/kl", "meta/line_search_steps", "meta/accepted",
        "time/sampling", "time/update", "time/elapsed", "sampling/env_steps",
    ):  # fmt: skip
        assert key in metrics[-1], key
    accepted = [m for m in metrics if m["meta/accepted"] == 1.0]
    assert accepted and all(m["meta/kl"] <= config.max_kl for m in accepted)
    assert all(m["meta/surrogate_after"] < m["meta/surrogate_before"] for m in accepted)


@pytest.mark.parametrize(
    "modes",
    [
        ["meta_gradient=first_order"],
        ["fisher_product=finite_difference"],
        ["meta_gradient=finite_difference", "fisher_product=finite_difference"],
        ["fisher_subsample=1", "inner_steps=2"],
        ["fisher_product=gauss_newton"],
        ["fisher_product=gauss_newton", "fisher_subsample=1", "inner_steps=2"],
        ["fisher_product=gauss_newton", "meta_gradient=first_order"],
        ["line_search_rule=measured_kl", "max_kl=0.001"],
    ],
)
def test_every_meta_gradient_mode_trains(tmp_path: Path, modes: list[str]) -> None:
    config = _small("iterations=2", "meta_batch_size=4", "episodes_per_task=4", *modes)
    train(config, tmp_path, progress=False)
    metrics = read_metrics(tmp_path)
    assert len(metrics) == 2
    assert any(m["meta/accepted"] == 1.0 for m in metrics)
    assert all(m["meta/kl"] <= config.max_kl for m in metrics)


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    args = ["--set", *SMALL, "meta_batch_size=4", "episodes_per_task=4", "checkpoint_every=2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "navigation", "--out", str(straight), *args, "iterations=4",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["train", "navigation", "--out", str(split), *args, "iterations=2",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["train", "navigation", "--resume", str(split), "--set", "iterations=4",
                 "--no-progress"]) == 0  # fmt: skip
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["iteration"] == b["iteration"] == 4
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert torch.equal(a["action_noise"], b["action_noise"])
    assert a["task_rng"] == b["task_rng"]
    assert a["best"]["iteration"] == b["best"]["iteration"]  # the best model survives a resume
    assert a["best"]["return"] == b["best"]["return"]
    for name, tensor in a["best"]["model"].items():
        assert torch.equal(tensor, b["best"]["model"][name]), name

    def deterministic(run: Path) -> list[dict]:
        return [
            {k: v for k, v in m.items() if not k.startswith("time") and k != "time"}
            for m in read_metrics(run)
        ]

    assert deterministic(straight) == deterministic(split)


def test_a_time_limit_stops_between_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    """A past deadline stops training at the next window's end (log_every 1: after one
    iteration, before the periodic checkpoint at 2), with a checkpoint there."""
    from metarl.api import train as train_experiment

    overrides = [*SMALL, "meta_batch_size=4", "episodes_per_task=4", "checkpoint_every=2",
                 "iterations=3"]  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_experiment("navigation", overrides, out=straight, progress=False)
    train_experiment("navigation", overrides, out=split, progress=False, time_limit=0)
    assert load_checkpoint(split)["iteration"] == 1
    train_experiment("navigation", resume=split, progress=False)
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["iteration"] == b["iteration"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["env_steps"] == b["env_steps"]
    assert (a["best"]["iteration"], a["best"]["return"]) == (b["best"]["iteration"],
                                                             b["best"]["return"])  # fmt: skip
    returns = [
        [m["returns/post_adaptation"] for m in read_metrics(run)] for run in (straight, split)
    ]
    assert len(returns[1]) == 3 and returns[0] == returns[1]


def test_checkpoint_minutes_saves_between_the_periodic_checkpoints(
    tmp_path: Path, record_saves: Callable[[object], list[int]]
) -> None:
    """With ``checkpoint_minutes`` near 0 every window's end (log_every 1) is saved, besides the
    periodic checkpoint at 2; with 0 only that one and the last."""
    import metarl.rl.trainer as trainer
    from metarl.api import train as train_experiment

    seen = record_saves(trainer)
    overrides = [*SMALL, "meta_batch_size=2", "episodes_per_task=2", "checkpoint_every=2",
                 "iterations=3"]  # fmt: skip
    for minutes, saved in ((0, [2, 3]), (1e-9, [1, 2, 3])):
        seen.clear()
        train_experiment("navigation", [*overrides, f"checkpoint_minutes={minutes}"],
                         out=tmp_path / str(minutes), progress=False)  # fmt: skip
        assert seen == saved


def test_the_checkpoint_counts_cpu_seconds_across_resumes(tmp_path: Path) -> None:
    """``cpu_elapsed`` is the training process's CPU time, summed over resumes: positive, at
    most what this process spent meanwhile; a run resumed from a checkpoint that did not
    count it does not pretend to know it (NaN)."""
    import math
    import time

    args = ["--set", *SMALL, "meta_batch_size=2", "episodes_per_task=2", "checkpoint_every=1"]
    run = tmp_path / "run"
    spent = time.process_time()
    assert main(["train", "navigation", "--out", str(run), *args, "iterations=1",
                 "--no-progress"]) == 0  # fmt: skip
    first = load_checkpoint(run)["cpu_elapsed"]
    assert main(["train", "navigation", "--resume", str(run), "--set", "iterations=2",
                 "--no-progress"]) == 0  # fmt: skip
    spent = time.process_time() - spent
    second = load_checkpoint(run)["cpu_elapsed"]
    assert 0 < first < second <= spent
    state = load_checkpoint(run)
    del state["cpu_elapsed"]  # as written before CPU time was counted
    atomic_torch_save(state, run / CHECKPOINT)
    assert main(["train", "navigation", "--resume", str(run), "--set", "iterations=3",
                 "--no-progress"]) == 0  # fmt: skip
    assert math.isnan(load_checkpoint(run)["cpu_elapsed"])


def test_the_best_model_is_the_one_that_sampled_the_best_return(tmp_path: Path) -> None:
    args = [*SMALL, "meta_batch_size=4", "episodes_per_task=4", "seed=5"]
    config = load_config("navigation", [*args, "iterations=5", "log_every=1"])
    for run in ("five", "again"):
        (tmp_path / run).mkdir()
    train(config, tmp_path / "five", progress=False)
    best = load_checkpoint(tmp_path / "five")["best"]
    returns = [m["returns/post_adaptation"] for m in read_metrics(tmp_path / "five")]
    assert best["return"] == max(returns)
    assert best["iteration"] == int(np.argmax(returns))  # updates applied before it sampled
    # Independent check: the same seed trained for exactly that many updates gives those weights.
    again = load_config("navigation", [*args, f"iterations={max(best['iteration'], 1)}"])
    policy = train(again, tmp_path / "again", progress=False) if best["iteration"] else None
    reference = policy.state_dict() if policy is not None else build_policy(config).state_dict()
    for name, tensor in best["model"].items():
        assert torch.equal(tensor, reference[name]), name
    # `metarl evaluate` tests it by default (the paper), the last one with eval_model=last
    assert main(["evaluate", str(tmp_path / "five"), "--no-progress"]) == 0
    first = read_report(tmp_path / "five")
    model = first.model
    assert (model.choice, model.iteration, model.training_return, model.checkpoint_iteration) == (
        "best", best["iteration"], best["return"], 5
    )  # fmt: skip
    assert (
        main(["evaluate", str(tmp_path / "five"), "--set", "eval_model=last", "--no-progress"]) == 0
    )
    model = read_report(tmp_path / "five").model
    assert (model.choice, model.iteration, model.checkpoint_iteration) == ("last", 5, 5)
    # The same kept model tested at a later checkpoint gives the same numbers (time to quality
    # reuses them): later training changes the last model and the generators, not the test.
    state = load_checkpoint(tmp_path / "five")
    later = {**state, "iteration": 6, "model": {n: t + 1.0 for n, t in state["model"].items()},
             "task_rng": np.random.default_rng(99).bit_generator.state,
             "action_noise": torch.Generator().manual_seed(99).get_state()}  # fmt: skip
    atomic_torch_save(later, tmp_path / "five" / CHECKPOINT)
    assert main(["evaluate", str(tmp_path / "five"), "--no-progress"]) == 0
    again = read_report(tmp_path / "five")
    assert [(c.method, c.mean, c.error) for c in again.curves] == [
        (c.method, c.mean, c.error) for c in first.curves
    ]
    # A checkpoint without a best model (written before one was kept): evaluate and load_run's
    # default both fall back to the last model and say so; only an explicit "best" is refused.
    atomic_torch_save(
        {k: v for k, v in later.items() if k != "best"}, tmp_path / "five" / CHECKPOINT
    )
    assert main(["evaluate", str(tmp_path / "five"), "--no-progress"]) == 0
    model = read_report(tmp_path / "five").model
    assert (model.choice, model.iteration, model.note) == (
        "last",
        6,
        "no best model in the checkpoint",
    )
    run = load_run(tmp_path / "five")
    assert (run.which, run.iteration) == ("last", 6)
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, later["model"][name]), name
    with pytest.raises(ConfigError, match="keeps no best model .it was trained before best models"):
        load_run(tmp_path / "five", which="best")


def test_evaluate_writes_the_report_and_plots(tmp_path: Path, capsys) -> None:
    config = _small("iterations=1")
    assert main(["train", "navigation", "--out", str(tmp_path), "--set", *SMALL, "iterations=1",
                 "--evaluate", "--no-progress"]) == 0  # fmt: skip
    report = read_report(tmp_path)
    closed = (report.curve("meta_learned").mean[1] - report.curve("random_init").mean[1]) / (
        report.curve("oracle_analytic").mean[0] - report.curve("random_init").mean[1]
    )
    printed = capsys.readouterr().out
    assert f"after 1 step MAML closes {100 * closed:.0f} ± " in printed
    assert "paired over the test tasks" in printed  # every curve kept its per-task returns
    assert all(len(c.tasks_at(0) or []) == config.eval_tasks for c in report.curves)
    assert [c.method for c in report.curves] == ["meta_learned", "random_init", "oracle_analytic"]
    for curve in report.curves[:2]:
        assert curve.steps == [0, 1, 2]
        assert len(curve.mean) == len(curve.error) == 3
    oracle, maml = report.curve("oracle_analytic"), report.curve("meta_learned")
    assert oracle.steps == [0] and oracle.mean[0] > max(maml.mean)
    assert report.gap_oracle == "oracle_analytic" and report.error_bar == "stderr"
    assert report.protocol["step_sizes"] == [config.inner_lr, config.inner_lr / 2]
    for plot in ("return_vs_steps.png", "trajectories.png", "learning_curve.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 0
    table = results_table(report)
    assert "| MAML |" in table and "| oracle |" in table and "| paper: MAML |" in table
    run = load_run(tmp_path)  # the model `metarl evaluate` tested: the best one
    assert run.which == "best" and run.iteration == report.model.iteration
    assert load_run(tmp_path, which="last").iteration == 1


def test_a_baseline_adapts_with_its_own_step_sizes_when_given(tmp_path: Path) -> None:
    """``eval_lr_random_init`` changes the random-init curve exactly as ``eval_lr`` for every
    method would, and leaves MAML's curve as it was."""
    assert main(["train", "navigation", "--out", str(tmp_path), "--set", *SMALL, "iterations=1",
                 "--no-progress"]) == 0  # fmt: skip

    def curves(*sets: str) -> dict:
        assert main(["evaluate", str(tmp_path), "--no-progress", "--set", *sets]) == 0
        report = read_report(tmp_path)
        return {c.method: c.mean for c in report.curves} | {"protocol": report.protocol}

    default = curves("eval_trajectory_goals=0")
    everyone = curves("eval_trajectory_goals=0", "eval_lr=[0.3,0.05]")
    own = curves("eval_trajectory_goals=0", "eval_lr_random_init=[0.3,0.05]")
    assert own["meta_learned"] == default["meta_learned"]
    assert own["random_init"] == everyone["random_init"] != default["random_init"]
    assert own["protocol"]["step_sizes_by_method"]["random_init"] == [0.3, 0.05]
    assert "step_sizes_by_method" not in default["protocol"]


def test_reused_baseline_scores_equal_a_full_evaluation_and_expire(tmp_path: Path) -> None:
    """``eval_reuse_baselines`` takes the baselines' curves from the earlier eval.json: after
    more training the report equals a full evaluation of the same checkpoint; a changed
    scoring setting or baseline file measures them again."""
    assert main(["train", "navigation", "--out", str(tmp_path), "--set", *SMALL, "iterations=1",
                 "--no-progress"]) == 0  # fmt: skip
    reuse = ["eval_trajectory_goals=0", "eval_reuse_baselines=true"]

    def evaluate(*sets: str):
        assert main(["evaluate", str(tmp_path), "--no-progress", "--set", *sets]) == 0
        report = read_report(tmp_path)
        return report, [(c.method, c.mean, c.error) for c in report.curves]

    first, _ = evaluate(*reuse)
    assert first.details["baselines_reused"] is False  # nothing stored to take them from
    assert main(["train", "navigation", "--resume", str(tmp_path), "--set", "iterations=2",
                 "--no-progress"]) == 0  # fmt: skip
    reused, reused_curves = evaluate(*reuse)
    full, full_curves = evaluate("eval_trajectory_goals=0")
    assert reused.details["baselines_reused"] is True and not full.details["baselines_reused"]
    assert reused_curves == full_curves
    assert [c.method for c in reused.curves] == ["meta_learned", "random_init", "oracle_analytic"]
    assert reused.model == full.model and gap_closed(reused) == gap_closed(full)

    other_seed, _ = evaluate(*reuse, "eval_seed=7")  # other test tasks: measured again
    assert other_seed.details["baselines_reused"] is False
    config, baselines = _small("iterations=2"), tmp_path.parent / "baselines" / "navigation"
    assert baseline_fingerprint(config, baselines) == full.details["baseline_fingerprint"]
    baselines.mkdir(parents=True)
    (baselines / "oracle.pt").write_bytes(b"another oracle")  # a new file: measured again
    assert baseline_fingerprint(config, baselines) != full.details["baseline_fingerprint"]


# --- test-time adaptation against a plain re-implementation ----------------------------------
# Tiny on purpose: 4 episodes of 15 steps per task, 3 steps (α, α/2, α/2), a 16-unit policy.
ADAPT = ["horizon=15", "hidden_sizes=[16]", "eval_episodes_per_task=4", "eval_steps=3",
         "tensorboard=false"]  # fmt: skip


def _plain_policy(policy, params: dict[str, Tensor]):
    """A float64 deepcopy of ``policy`` holding one task's ``params`` (no task dimension)."""
    net = deepcopy(policy).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])
    return net


def _reference_rollout(policy, stage: list[dict[str, Tensor]], tasks, n_episodes, horizon,
                       generator: torch.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Episodes of every task, one gymnasium :class:`Navigation2DEnv` per episode, the actions
    of task ``i`` sampled as ``a = μ(s) + σ ε`` with ``stage[i]``'s parameters.

    ``ε`` is drawn from ``generator`` once per time step for all ``(task, episode)`` pairs, the
    finished ones included, until every episode has ended (metarl.rl.sampler's documented
    noise stream, so that the same seed gives the same episodes). Layout ``(T, n_tasks, E, …)``.
    """
    nets = [_plain_policy(policy, params) for params in stage]
    envs = [[Navigation2DEnv(horizon=horizon, task=task) for _ in range(n_episodes)]
            for task in tasks]  # fmt: skip
    obs = np.array([[env.reset()[0] for env in row] for row in envs], dtype=np.float64)
    alive = np.ones(obs.shape[:2], dtype=bool)
    out: dict[str, list[np.ndarray]] = {"obs": [], "actions": [], "rewards": [], "masks": []}
    for _ in range(horizon):
        noise = torch.randn((*obs.shape[:2], 2), generator=generator).double()
        actions = np.zeros_like(obs)
        with torch.no_grad():
            for i, net in enumerate(nets):
                mean, log_std = net(torch.from_numpy(obs[i]))
                actions[i] = (mean + log_std.exp() * noise[i]).numpy()
        out["obs"].append(obs.copy())
        out["actions"].append(actions)
        out["masks"].append(alive.astype(np.float64))
        rewards = np.zeros(alive.shape)
        for i, row in enumerate(envs):
            for e, env in enumerate(row):
                if alive[i, e]:
                    obs[i, e], rewards[i, e], terminated, truncated, _ = env.step(actions[i, e])
                    alive[i, e] = not (terminated or truncated)
        out["rewards"].append(rewards)
        if not alive.any():
            break
    return {key: np.stack(values) for key, values in out.items()}


def _reference_advantages(obs: np.ndarray, rewards: np.ndarray, masks: np.ndarray,
                          gamma: float, reg: float) -> np.ndarray:  # fmt: skip
    """One task's ``(T, E)`` advantages for GAE λ = 1: the discounted return to go minus the
    linear feature baseline ``[o, o², s, s², s³, 1]`` (``s = t/100``) ridge-fitted on this
    task's own episodes (Finn et al. 2017, Sec. 5.3, after Duan et al. 2016), standardised over
    the task's valid steps."""
    returns, running = np.zeros_like(rewards), np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        running = masks[t] * (rewards[t] + gamma * running)
        returns[t] = running
    s = np.broadcast_to((np.arange(len(rewards)) / 100.0)[:, None, None], (*masks.shape, 1))
    o = np.clip(obs, -10.0, 10.0)
    valid = masks == 1
    x = np.concatenate([o, o * o, s, s * s, s**3, np.ones_like(s)], axis=-1)[valid]
    weights = np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ returns[valid])
    advantages = returns[valid] - x @ weights
    out = np.zeros_like(rewards)
    out[valid] = (advantages - advantages.mean()) / advantages.std()
    return out


def _reference_step(policy, params: dict[str, Tensor], episodes: dict[str, np.ndarray],
                    config, alpha: float) -> dict[str, Tensor]:  # fmt: skip
    """θ − α ∇θ L for one task's ``episodes`` (``(T, E, …)``), with
    ``L = −mean over the valid steps of log π(a|s) · A``: autograd on a deepcopy, a manual SGD
    step."""
    net = _plain_policy(policy, params)
    valid = episodes["masks"] == 1
    advantages = _reference_advantages(
        episodes["obs"], episodes["rewards"], episodes["masks"], config.gamma, config.baseline_reg
    )
    mean, log_std = net(torch.from_numpy(episodes["obs"][valid]))
    log_probs = Normal(mean, log_std.exp()).log_prob(torch.from_numpy(episodes["actions"][valid]))
    loss = -(log_probs.sum(-1) * torch.from_numpy(advantages[valid])).mean()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= alpha * p.grad
    return {name: p.detach() for name, p in net.named_parameters()}


def _task(episodes: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Task ``i``'s episodes ``(T, E, …)`` of a ``(T, n_tasks, E, …)`` batch."""
    return {key: value[:, i] for key, value in episodes.items()}


def _expected_step_sizes(config) -> list[float]:
    """The paper's test-time schedule (``eval_lr`` unset): α, then α/2 for every later step."""
    assert config.eval_lr is None and config.gae_lambda == 1.0 and config.normalize_advantages
    return [config.inner_lr] + [config.inner_lr / 2] * (config.eval_steps - 1)


def test_adaptation_curve_matches_a_plain_reimplementation(monkeypatch) -> None:
    """Every stage of ``adaptation_curve``: its episodes are what the stage's parameters sample
    in the gymnasium environment with the same noise, and the next stage's parameters are one
    hand-written REINFORCE step (α, α/2, α/2) on them."""
    config = load_config("navigation", ADAPT)
    n_tasks, n_episodes, alphas = 3, config.eval_episodes_per_task, _expected_step_sizes(config)
    policy = build_policy(config)
    env = make_batched_env(config.env, n_tasks * n_episodes, config.horizon)
    tasks = env.sample_tasks(n_tasks, np.random.default_rng(11))
    sampler, seen = rl_evaluate.sampled_adaptation, []

    def recording(*args, **kwargs):  # keeps the episodes adaptation_curve gets
        seen.append(sampler(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(rl_evaluate, "sampled_adaptation", recording)
    curve = adaptation_curve(policy, env, tasks, config, torch.Generator().manual_seed(5))
    (episodes, _), stages = seen[0], curve.params
    assert len(episodes) == len(stages) == len(alphas) + 1

    noise = torch.Generator().manual_seed(5)
    for k, (batch, stage) in enumerate(zip(episodes, stages)):
        per_task = [{name: p[i] for name, p in stage.items()} for i in range(n_tasks)]
        if k == 0:  # every task starts from θ
            for params in per_task:
                for name, p in policy.named_parameters():
                    assert torch.equal(params[name], p.detach()), name
        replay = _reference_rollout(policy, per_task, tasks, n_episodes, config.horizon, noise)
        recorded = {key: value.double().numpy() for key, value in (
            ("obs", batch.observations), ("actions", batch.actions),
            ("rewards", batch.rewards), ("masks", batch.masks),
        )}  # fmt: skip
        for key, value in recorded.items():
            np.testing.assert_allclose(value, replay[key], rtol=1e-5, atol=1e-5,
                                       err_msg=f"stage {k}: {key}")  # fmt: skip
        np.testing.assert_allclose(
            curve.returns[k].numpy(), replay["rewards"].sum(0).mean(1), rtol=1e-5
        )
        if k == len(alphas):
            break
        for i in range(n_tasks):  # the step from the library's own episodes of the stage
            expected = _reference_step(policy, per_task[i], _task(recorded, i), config, alphas[k])
            moved = max(float((expected[n] - per_task[i][n]).abs().max()) for n in expected)
            assert moved > 1e-2, "a step this small would not test the step size"
            for name, value in expected.items():
                where = f"stage {k + 1}, task {i}, {name}"
                torch.testing.assert_close(
                    stages[k + 1][name][i].double(), value, rtol=1e-5, atol=1e-5, msg=where
                )


def test_adapt_policy_matches_a_plain_reimplementation(tmp_path: Path) -> None:
    """``LoadedRun.adapt_policy`` on one task: the same parameters and returns, stage after
    stage, as sampling in the gymnasium environment and stepping by hand from θ (α, α/2, α/2),
    with nothing taken from the library's episodes."""
    config = load_config("navigation", ADAPT)
    policy = build_policy(config)
    run = LoadedRun(policy, config, 0, tmp_path, "last", None, {})
    task = {"goal": np.array([0.3, -0.4])}
    adaptation = run.adapt_policy(task, seed=7)
    alphas = _expected_step_sizes(config)
    assert len(adaptation.params) == len(adaptation.returns) == len(alphas) + 1

    noise, params = torch.Generator().manual_seed(7), get_params(policy)
    for k, (adapted, mean_return) in enumerate(zip(adaptation.params, adaptation.returns)):
        for name, value in params.items():
            torch.testing.assert_close(adapted[name].double(), value.detach().double(),
                                       rtol=1e-5, atol=1e-5, msg=f"stage {k}, {name}")  # fmt: skip
        episodes = _reference_rollout(
            policy, [params], [task], config.eval_episodes_per_task, config.horizon, noise
        )
        assert mean_return == pytest.approx(episodes["rewards"].sum(0).mean(), rel=1e-5)
        if k < len(alphas):
            params = _reference_step(policy, params, _task(episodes, 0), config, alphas[k])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("eval_lr_random_init=[]", "eval_lr_random_init"),
        ("max_kl=-0.1", "max_kl"),
        ("gamma=1.5", "gamma"),
        ("meta_gradient=third_order", "meta_gradient"),
        ("hidden_sizes=[0]", "hidden_sizes"),
        ("fisher_product=exact", "fisher_product"),
        ("meta_gradient=finite_difference", "fisher_product"),
        ("eval_lr=[]", "eval_lr"),
        ("eval_step_sizes=[0.1]", "renamed to 'eval_lr'"),
        ("line_search_step=3", "line_search_steps"),  # a typo: the closest key is suggested
    ],
)
def test_invalid_config_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config("navigation", [override])


def test_finite_difference_mode_is_a_valid_combination() -> None:
    config = load_config(
        "navigation", ["meta_gradient=finite_difference", "fisher_product=finite_difference"]
    )
    assert config.meta_gradient == config.fisher_product == "finite_difference"


def test_resuming_another_experiment_is_refused(tmp_path: Path, capsys) -> None:
    sinusoid = ["iterations=2", "log_every=1", "checkpoint_every=1", "tensorboard=false"]
    assert (
        main(["train", "sinusoid", "--out", str(tmp_path), "--set", *sinusoid, "--no-progress"])
        == 0
    )
    capsys.readouterr()
    assert main(["train", "navigation", "--resume", str(tmp_path), "--no-progress"]) == 1
    assert "not 'navigation'" in capsys.readouterr().err


def test_tensorboard_holds_the_policy_the_evaluation_and_the_hyperparameters(tmp_path: Path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from torch.distributions import Normal

    run = tmp_path / "run"
    assert main(["train", "navigation", "--out", str(run), "--no-progress", "--evaluate",
                 "--set", *SMALL, "iterations=2", "tensorboard=true"]) == 0  # fmt: skip
    last = read_metrics(run)[-1]
    policy = load_run(run, which="last").model
    entropy = Normal(torch.zeros(2), policy.log_std.detach().exp()).entropy().sum()
    assert last["policy/entropy"] == pytest.approx(float(entropy), rel=1e-6)
    assert last["policy/std"] == pytest.approx(float(policy.log_std.exp().mean()), rel=1e-6)
    events = EventMultiplexer().AddRunsFromDirectory(str(run))
    events.Reload()
    scalars = {run_name: set(tags["scalars"]) for run_name, tags in events.Runs().items()}
    assert {"policy/entropy", "eval/MAML/step 1", "eval/oracle/step 0"} <= scalars["."]
    assert scalars["hparams"] == {"eval/return after 1 step"}
