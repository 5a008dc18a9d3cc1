"""End to end through the CLI: train, resume, evaluate, load_run, and the error paths."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import metarl
from metarl.cli import main
from metarl.reports import read_report
from metarl.run import read_metrics

SMALL = [
    "iterations=40",
    "log_every=10",
    "checkpoint_every=20",
    "tensorboard=false",
    "eval_tasks=30",
    "eval_steps=3",
    "eval_shots=[5, 10]",
    "baseline_iterations=30",
    "pretrained_finetune_lrs=[0.01, 0.1]",
]


def _train(out, *extra):
    return main(["train", "sinusoid", "--out", str(out), "--no-progress", "--set", *SMALL, *extra])


def test_train_writes_a_complete_run_directory(tmp_path):
    assert _train(tmp_path / "run") == 0
    run = tmp_path / "run"
    assert (run / "config.yaml").exists() and (run / "checkpoint.pt").exists()
    metrics = read_metrics(run)
    assert [m["iteration"] for m in metrics] == [10, 20, 30, 40]
    assert all(m["meta/query_loss"] > 0 for m in metrics)
    loaded = metarl.load_run(run)
    assert loaded.iteration == 40 and loaded.config.iterations == 40
    out = loaded.model(torch.zeros(3, 1))
    assert out.shape == (3, 1)


def test_same_seed_same_numbers(tmp_path):
    assert _train(tmp_path / "a") == 0 and _train(tmp_path / "b") == 0
    assert _train(tmp_path / "c", "seed=1") == 0
    la, lb, lc = ([m["meta/query_loss"] for m in read_metrics(tmp_path / run)] for run in "abc")
    assert len(la) == 4 and la == lb
    assert la != lc  # the seed does reach the numbers


def test_resume_continues_exactly(tmp_path):
    _train(tmp_path / "full")
    # Stop at 20 (as if interrupted after the first checkpoint), then resume to 40.
    assert _train(tmp_path / "part", "iterations=20") == 0
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "part"), "--no-progress",
                 "--set", "iterations=40"]) == 0  # fmt: skip
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    for name in full:
        assert torch.equal(full[name], part[name]), name
    assert [m["iteration"] for m in read_metrics(tmp_path / "part")] == [10, 20, 30, 40]


def test_a_time_limit_ends_the_session_at_a_window_with_a_checkpoint_and_resumes_exactly(
    tmp_path, capsys
):
    """`--time-limit 0` stops at the first log window's end (10), before the first periodic
    checkpoint (20), and checkpoints there: a resume to 40 equals an uninterrupted run."""
    _train(tmp_path / "full")
    part = tmp_path / "part"
    assert _train(part, "--time-limit", "0") == 0
    assert "continue: metarl train sinusoid --resume" in capsys.readouterr().out
    assert torch.load(part / "checkpoint.pt", weights_only=True)["iteration"] == 10
    assert main(["train", "sinusoid", "--resume", str(part), "--no-progress"]) == 0
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    done = torch.load(part / "checkpoint.pt", weights_only=True)
    assert done["iteration"] == 40
    for name in full["model"]:
        assert torch.equal(full["model"][name], done["model"][name]), name
    logged = [read_metrics(run) for run in (tmp_path / "full", part)]
    assert [m["iteration"] for m in logged[1]] == [10, 20, 30, 40]
    for a, b in zip(*logged, strict=True):
        assert a["meta/query_loss"] == b["meta/query_loss"]
    # An evaluation asked of a session the limit cuts short waits for the trained model.
    assert _train(tmp_path / "short", "--time-limit", "0", "--evaluate") == 0
    assert not (tmp_path / "short" / "eval.json").exists()
    assert main(["train", "sinusoid", "--resume", str(part), "--time-limit", "-1"]) == 2
    assert "time limit: -1.0 minutes" in capsys.readouterr().err


def test_a_checkpoint_is_due_by_iterations_or_by_time_at_a_window_end():
    """Every ``every`` iterations always; by time only where a window ends, and only once
    ``minutes`` have passed since the last save; 0 minutes never saves by time."""
    from metarl.loop import CheckpointSchedule

    now = [0.0]
    schedule = CheckpointSchedule(every=1000, minutes=10, clock=lambda: now[0])
    assert schedule.due(1000, window_ends=False) and not schedule.due(100, window_ends=True)
    now[0] = 601.0
    assert schedule.due(100, window_ends=True) and not schedule.due(101, window_ends=False)
    schedule.saved()
    assert not schedule.due(200, window_ends=True)
    now[0] = 1202.0
    assert schedule.due(200, window_ends=True)
    assert not CheckpointSchedule(1000, 0, clock=lambda: now[0]).due(100, window_ends=True)


def test_a_long_wait_since_the_last_checkpoint_saves_at_the_next_window(tmp_path, record_saves):
    """``checkpoint_minutes`` adds saves where windows end (10, 30) to the periodic ones (20,
    40), and the run trains the same numbers with or without them."""
    import metarl.supervised.trainer as trainer

    seen = record_saves(trainer)
    assert _train(tmp_path / "periodic", "checkpoint_minutes=0") == 0
    assert seen == [20, 40]
    seen.clear()
    assert _train(tmp_path / "often", "checkpoint_minutes=1e-9") == 0
    assert seen == [10, 20, 30, 40]
    losses = [[m["meta/query_loss"] for m in read_metrics(tmp_path / run)]
              for run in ("periodic", "often")]  # fmt: skip
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_evaluate_writes_eval_json_and_plots(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, "iterations=300", "checkpoint_every=100")
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    report = read_report(run)
    assert {c.setting for c in report.curves} == {"K=5", "K=10"}
    curves = {c.method: c for c in report.curves if c.setting == "K=10"}
    assert set(curves) == {"meta_learned", "pretrained", "oracle"}
    maml = curves["meta_learned"]
    assert maml.steps == [0, 1, 2, 3] and len(maml.error) == 4 and report.error_bar == "ci95"
    # After a little meta-training, one gradient step already helps.
    assert maml.mean[1] < maml.mean[0]
    assert set(report.details["pretrained_finetune_lr"].values()) <= {0.01, 0.1}
    for name in ("mse_vs_steps_K5.png", "predictions.png", "learning_curve.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert "| K=10 | MAML |" in capsys.readouterr().out
    # The baselines are stored and reused.
    assert (run / "baselines.pt").exists()


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "sinusoid", "--set", "inner_lrr=0.1"]) == 2
    assert "unknown config key 'inner_lrr'" in capsys.readouterr().err
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "nowhere")]) == 1
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "empty")]) == 1
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "empty")]) == 1


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run)
    before = (run / "checkpoint.pt").read_bytes()
    assert _train(run) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_another_experiment_and_config_changes(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["experiment"] = "navigation"
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "sinusoid", "--resume", str(run)]) == 1
    assert "is a run of 'navigation', not 'sinusoid'" in capsys.readouterr().err
    _train(tmp_path / "ok")
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "ok"), "--set", "k_shot=5"]) == 2
    assert (
        "only `iterations`, `num_threads`, `checkpoint_minutes`, `time_budget` and `device` may "
        "change" in (capsys.readouterr().err)
    )
    # The thread count and how often it saves are how the run uses the machine, not part of
    # the experiment.
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "ok"), "--set",
                 "iterations=40", "num_threads=1", "checkpoint_minutes=0"]) == 0  # fmt: skip
    assert main(["train", "sinusoid", "--resume", str(tmp_path / "ok"), "--set",
                 "iterations=6"]) == 2  # fmt: skip
    assert "already ran 40 iterations, and a run cannot be shortened" in capsys.readouterr().err


def test_a_longer_run_stopped_early_can_be_declared_finished(tmp_path, capsys):
    # Asked for 4, stopped after the checkpoint at 2: resuming with iterations=2 records the
    # budget in the checkpoint (what `metarl bench` reads) and config.yaml, and changes nothing
    # else: no training, θ, the best model and the generators' states as they were.
    run = tmp_path / "run"
    tiny = ["iterations=2", "checkpoint_every=1", "meta_batch_size=2", "episodes_per_task=2",
            "horizon=5", "tensorboard=false"]  # fmt: skip
    assert main(["train", "navigation", "--out", str(run), "--no-progress", "--set", *tiny]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["best"] is not None
    state["config"]["iterations"] = 4
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "navigation", "--resume", str(run), "--no-progress",
                 "--set", "iterations=2"]) == 0  # fmt: skip
    after = torch.load(run / "checkpoint.pt", weights_only=True)
    assert after.keys() == state.keys()
    assert after["iteration"] == 2 and after["config"] == {**state["config"], "iterations": 2}
    for name, tensor in state["model"].items():
        assert torch.equal(after["model"][name], tensor), name
    for name, tensor in state["best"]["model"].items():
        assert torch.equal(after["best"]["model"][name], tensor), name
    assert after["best"]["iteration"] == state["best"]["iteration"]
    assert torch.equal(after["action_noise"], state["action_noise"])
    assert after["task_rng"] == state["task_rng"]
    assert "iterations: 2" in (run / "config.yaml").read_text()
    assert [m["iteration"] for m in read_metrics(run)] == [1, 2]
    assert "finished 2 iterations" in capsys.readouterr().err


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _train(run, "iterations=20")
    before = (run / "checkpoint.pt").read_bytes()
    import metarl.supervised.sinusoid_experiment as experiment
    from metarl.algorithms import Problem

    nan_loss = Problem(lambda p, t: (p - t).sum((1, 2)) * torch.nan)
    monkeypatch.setattr(experiment, "PROBLEM", nan_loss)
    code = main(["train", "sinusoid", "--resume", str(run), "--no-progress",
                 "--set", "iterations=40"])  # fmt: skip
    assert code == 1
    assert "not finite" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_insane_step_sizes_are_refused_before_anything_is_written(tmp_path, capsys):
    for setting, field in (("inner_lr=1e30", "inner_lr"), ("meta_lr=1e39", "meta_lr"),
                           ("fd_epsilon=0", "fd_epsilon")):  # fmt: skip
        assert _train(tmp_path / "refused", setting) == 2
        assert capsys.readouterr().err.startswith(f"metarl: error: {field}: ")
        assert not (tmp_path / "refused").exists()


def test_a_diverging_update_never_replaces_the_last_good_checkpoint(tmp_path, capsys):
    """Allowed but unstable step sizes blow up within a few iterations: the run stops with one
    line and the checkpoint on disk is the last one whose numbers were all finite."""
    run = tmp_path / "diverge"
    code = _train(run, "meta_lr=1.0", "inner_lr=10", "checkpoint_every=1", "log_every=1")
    assert code == 1
    err = capsys.readouterr().err
    assert "not finite" in err and "the last checkpoint is intact" in err, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert 0 < state["iteration"] < 40
    tensors = [*state["model"].values()]
    tensors += [t for s in state["optimizer"]["state"].values() for t in s.values()]
    assert all(torch.isfinite(t).all() for t in tensors)


def test_yaml_exponent_without_dot_is_a_number():
    from metarl.experiments import load_config

    assert load_config("sinusoid", ["meta_lr=1e-4"]).meta_lr == 1e-4


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "metarl.cli", "--help"], capture_output=True,
                         text=True, check=True, timeout=300).stdout  # fmt: skip
    assert "train" in out and "evaluate" in out


def test_finite_difference_and_first_order_training_run(tmp_path):
    for mode in ("first_order", "finite_difference"):
        assert _train(tmp_path / mode, f"meta_gradient={mode}", "iterations=20") == 0
        assert len(read_metrics(tmp_path / mode)) == 2


@pytest.mark.parametrize("script", ["train_sinusoid.py"])
def test_scripts_are_thin_entry_points(tmp_path, script):
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / script
    result = subprocess.run(
        [sys.executable, str(path), "--out", str(tmp_path / "s"), "--no-progress",
         "--set", *SMALL, "iterations=10"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s" / "checkpoint.pt").exists()


def test_check_step_measures_the_trpo_models(tmp_path, capsys):
    args = ["check-step", "navigation", "--tasks", "3", "--episodes", "4"]
    assert main([*args, "--set", "activation=tanh"]) == 0
    out = capsys.readouterr().out
    assert "navigation, untrained policy: tanh [100, 100]" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0.01 ")]
    assert len(rows) == 1
    fraction, model_kl, kl, ratio, *_ = (float(cell) for cell in rows[0])
    assert 0.9 < ratio < 1.1 and ratio == pytest.approx(kl / model_kl, rel=0.02)  # smooth
    agreement = [line for line in out.splitlines() if line.startswith("inner gradient")]
    assert len(agreement) == 1 and "two independent batches of 4 episodes per task" in out
    assert "meta-gradient, two independent meta-batches of 3 tasks x 4 episodes: cosine" in out
    assert main(["check-step", "sinusoid"]) == 2
    assert "check-step measures the meta-RL TRPO step" in capsys.readouterr().err
    _train(tmp_path / "run")
    assert main(["check-step", str(tmp_path / "run"), "--set", "seed=1"]) == 2
    assert "--set applies to an experiment name, not to a trained run" in capsys.readouterr().err
    assert main(["check-step", "navigation", "--tasks", "0"]) == 2
    assert "--tasks must be at least 1, got 0" in capsys.readouterr().err


def test_a_checkpoint_of_the_earlier_layout_resumes_and_evaluates(tmp_path):
    """Before the algorithm layer, MAML's step sizes were saved under "step_size" and some
    checkpoints had no "elapsed"; navigation configs said eval_step_sizes and eval_episodes."""
    run = tmp_path / "run"
    assert _train(run, "iterations=20", "learn_inner_lr=tensor") == 0  # α to carry over
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    learned = metarl.load_run(run).algorithm.state_dict()
    # one α per weight and bias of the 3-layer MLP, meta-learned apart from inner_lr
    assert len(learned) == 6 and len({float(v) for v in learned.values()}) == 6
    old = dict(state)
    old["step_size"] = {k.removeprefix("step_size."): v for k, v in old.pop("algorithm").items()}
    del old["elapsed"]
    torch.save(old, run / "checkpoint.pt")
    loaded = metarl.load_run(run).algorithm.state_dict()
    assert loaded.keys() == learned.keys()
    assert all(torch.equal(loaded[k], learned[k]) for k in learned)
    assert main(["train", "sinusoid", "--resume", str(run), "--no-progress",
                 "--set", "iterations=40"]) == 0  # fmt: skip
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    nav = tmp_path / "nav"
    tiny = [
        "iterations=1",
        "meta_batch_size=2",
        "episodes_per_task=2",
        "horizon=5",
        "eval_tasks=2",
        "eval_episodes_per_task=2",
        "eval_steps=1",
        "tensorboard=false",
    ]
    assert main(["train", "navigation", "--out", str(nav), "--no-progress", "--set", *tiny]) == 0
    state = torch.load(nav / "checkpoint.pt", weights_only=True)
    config = dict(state["config"])
    config["eval_step_sizes"], config["eval_episodes"] = config.pop("eval_lr"), 3
    del config["eval_episodes_per_task"], config["algorithm"]
    torch.save({**state, "config": config}, nav / "checkpoint.pt")
    assert main(["evaluate", str(nav), "--no-progress"]) == 0
    assert read_report(nav).protocol["episodes_per_step"] == 3
    assert main(["evaluate", str(nav), "--no-progress", "--set", "eval_step_sizes=[0.1]"]) == 2
    assert main(["train", "navigation", "--resume", str(nav), "--no-progress",
                 "--set", "iterations=2"]) == 0  # fmt: skip


@pytest.mark.parametrize("granularity", ["global", "tensor", "element"])
def test_meta_learned_step_sizes_train_evaluate_and_resume(tmp_path, granularity):
    run = tmp_path / "run"
    assert _train(run, "iterations=20", f"learn_inner_lr={granularity}") == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    alphas = list(state["algorithm"].values())
    assert alphas and all(a.shape == () for a in alphas) == (granularity != "element")
    assert any(not torch.allclose(a, torch.full_like(a, 0.01)) for a in alphas)  # learned
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert read_report(run).protocol["step_size"].startswith(f"meta-learned ({granularity})")
    assert main(["train", "sinusoid", "--resume", str(run), "--no-progress",
                 "--set", "iterations=40"]) == 0  # fmt: skip
    assert load_run_iteration(run) == 40


def load_run_iteration(run) -> int:
    return metarl.load_run(run).iteration


def test_evaluate_may_change_only_the_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress", "--set", "hidden_sizes=[20,20]"]) == 2
    err = capsys.readouterr().err
    assert "tests the trained model as it was trained" in err and "eval_steps" in err
    assert main(["evaluate", str(run), "--no-progress", "--set", "eval_step=2"]) == 2
    assert "--set eval_step: did you mean 'eval_steps'? " in capsys.readouterr().err
    assert main(["evaluate", str(run), "--no-progress", "--set", "eval_lr=0.02",
                 "eval_steps=2"]) == 0  # fmt: skip
    assert read_report(run).protocol["step_size"] == 0.02


def test_list_config_and_version_say_what_they_should(tmp_path, capsys):
    """`metarl list` names every experiment once with its YAML's first sentence ("Sec. 5.1"
    does not end it); `metarl config` prints YAML that loads back to the same config; and
    `--version` is the one pyproject.toml and `metarl.__version__` give."""
    import re
    from pathlib import Path

    from metarl.experiments import experiment_names, load_config

    assert main(["list"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isalnum()]
    assert [row.split()[0] for row in rows] == experiment_names()
    sinusoid = next(row for row in rows if row.split()[0] == "sinusoid")
    assert sinusoid.split(None, 1)[1] == (
        "Sinusoid regression, the MAML paper's protocol (Finn et al. 2017, Sec. 5.1 and App. A.1)"
    )
    assert main(["config", "omniglot-5w1s", "--set", "inner_lr=0.2", "n_way=3"]) == 0
    (tmp_path / "printed.yaml").write_text(capsys.readouterr().out)
    wanted = load_config("omniglot-5w1s", {"inner_lr": 0.2, "n_way": 3})
    assert load_config(tmp_path / "printed.yaml") == wanted
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M)[1] == metarl.__version__
    assert capsys.readouterr().out.strip() == f"metarl {metarl.__version__}"
