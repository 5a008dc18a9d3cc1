"""Hostile and unlucky users: files never execute code, a bad step never replaces a good
checkpoint, two processes never share a run, every failure is one line, signals stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import metarl
from metarl.cli import main
from metarl.config import ConfigError
from metarl.reports import ReportError, read_report
from metarl.run import RunError, atomic_torch_save, load_checkpoint, read_metrics

SINUSOID = ["iterations=20", "log_every=10", "checkpoint_every=10", "tensorboard=false",
            "eval_tasks=10", "eval_shots=[5]", "eval_steps=1",
            "baseline_iterations=10"]  # fmt: skip
NAVIGATION = ["iterations=1", "meta_batch_size=2", "episodes_per_task=2", "horizon=5",
              "eval_tasks=2", "eval_episodes_per_task=2", "eval_steps=1", "tensorboard=false",
              "checkpoint_every=1", "hidden_sizes=[8,8]"]  # fmt: skip


def _train(exp: str, out: Path, settings: list[str], *extra: str) -> int:
    return main(["train", exp, "--out", str(out), "--no-progress", "--set", *settings, *extra])


class _Payload:
    """A pickle that runs a command when it is loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"config": {"experiment": "sinusoid"}, "iteration": 1, "model": _Payload(marker)},
               path)  # fmt: skip


def _one_line(err: str) -> bool:
    return err.startswith("metarl: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_crafted_checkpoint_runs_no_code_in_any_reader(tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    assert _train("sinusoid", run, SINUSOID) == 0
    capsys.readouterr()
    _plant(run / "checkpoint.pt", marker)
    commands = [
        ["evaluate", str(run), "--no-progress"],
        ["train", "sinusoid", "--resume", str(run), "--no-progress"],
        ["view", str(run), "--no-progress"],
        ["check-step", str(run)],
    ]
    for command in commands:
        assert main(command) == 1, command
        err = capsys.readouterr().err
        assert _one_line(err) and "cannot read" in err and "checkpoint" in err, (command, err)
    import metarl

    with pytest.raises(RunError, match="cannot read"):
        metarl.load_run(run)
    assert not marker.exists()


def test_crafted_baseline_files_run_no_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    sinusoid = tmp_path / "sinusoid"
    assert _train("sinusoid", sinusoid, SINUSOID) == 0
    _plant(sinusoid / "baselines.pt", marker)
    assert main(["evaluate", str(sinusoid), "--no-progress"]) == 1
    assert "cannot read" in capsys.readouterr().err
    navigation, baselines = tmp_path / "navigation", tmp_path / "baselines"
    baselines.mkdir()
    _plant(baselines / "oracle.pt", marker)
    assert _train("navigation", navigation, NAVIGATION, f"baselines_dir={baselines}") == 0
    capsys.readouterr()
    assert main(["evaluate", str(navigation), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and "oracle.pt" in err
    assert not marker.exists()


def _unreadable_files(folder: Path) -> list[tuple[str, Path]]:
    """Files of each way a checkpoint can fail to load, with the reason each should be given."""
    import pickle

    good = folder / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    objects, other, truncated = (
        f"objects ({os.system.__module__}.system)",
        "another format",
        "truncated",
    )
    files = [(objects, folder / "objects.pt")]
    _plant(files[0][1], folder / "pwned")
    plain = pickle.dumps({"a": 1}, protocol=4)  # torch warns of its protocol: not shown
    for name, data in (("text.pt", b"not a checkpoint\n"), ("hello.pt", b"hello\n"),
                       ("empty.pt", b""), ("plain.pt", plain)):  # fmt: skip
        (folder / name).write_bytes(data)
        files.append((other, folder / name))
    for size in (500, 2000):
        (folder / f"cut{size}.pt").write_bytes(good.read_bytes()[:size])
        files.append((truncated, folder / f"cut{size}.pt"))
    return files


def test_an_unreadable_checkpoint_says_why_and_never_suggests_unsafe_loading(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for reason, file in _unreadable_files(tmp_path):
        os.replace(file, run / "checkpoint.pt")
        assert main(["evaluate", str(run), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert _one_line(err) and reason in err, (reason, err)
        assert "weights_only" not in err, err
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_of_the_wrong_structure_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {"experiment": "sinusoid"}, "iteration": 3}, run / "checkpoint.pt")
    assert main(["evaluate", str(run)]) == 1
    assert "not a metarl checkpoint (no dict 'model')" in capsys.readouterr().err
    torch.save([1, 2, 3], run / "checkpoint.pt")
    with pytest.raises(RunError, match="not a metarl checkpoint"):
        load_checkpoint(run)


@pytest.mark.parametrize(
    "name", ["sinusoid-x/../../../../T", "../sinusoid", "sinusoid/../x", ".hidden", "a b"]
)
def test_run_names_cannot_escape_their_root(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    refusals = ("is not a plain name", "unknown experiment")
    assert main(["train", "sinusoid", "--no-progress", "--set", f"experiment={name}"]) == 2
    err = capsys.readouterr().err
    assert any(r in err for r in refusals), err
    yaml = tmp_path / "mine.yaml"
    yaml.write_text(f"experiment: '{name}'\n")
    assert main(["train", str(yaml), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert any(r in err for r in refusals), err
    assert list(tmp_path.iterdir()) == [yaml]  # nothing was created


def test_a_disk_full_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)

    def full_disk(obj, f):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunError, match=r"cannot write .*checkpoint.pt: .*MiB free on its disk"):
        atomic_torch_save({"x": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


@pytest.mark.parametrize(
    ("experiment", "setting", "message"),
    [
        ("sinusoid", "device=cuda", "no CUDA GPU"),
        ("sinusoid", "device=tpu", "is not cpu, cuda[:N] or mps"),
        ("navigation", "device=cuda", "device: "),
        ("sinusoid", "seed=100000000000000000000000", "seed: "),
        ("sinusoid", "eval_shots=[]", "eval_shots: give at least one"),
        ("navigation", "horizon=1000000000", "horizon: "),
        ("sinusoid", "meta_batch_size=100000000000", "meta_batch_size: one meta-iteration needs"),
        ("omniglot-5w1s", "meta_batch_size=1000000", "meta_batch_size: one meta-iteration needs"),
        ("navigation", "episodes_per_task=100000000", "episodes_per_task × horizon"),
    ],
)
def test_bad_values_stop_before_a_run_directory_exists(tmp_path, capsys, experiment, setting,
                                                       message):  # fmt: skip
    run = tmp_path / "run"
    code = main(["train", experiment, "--out", str(run), "--no-progress", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and _one_line(err) and message in err, err
    assert not run.exists()


def test_a_dataset_found_corrupt_at_the_start_leaves_no_run_behind(tmp_path, capsys, monkeypatch):
    """A truncated MNIST archive is found when training reads it, after the run directory is
    made: the error is one line naming the file, and the empty directory is removed (one that
    held a run before is left as it was)."""
    from metarl.supervised.data.files import dataset_dir

    try:
        mnist = dataset_dir(None, "mnist")
    except Exception:  # noqa: BLE001 - any reason the data is not here
        pytest.skip("MNIST is not on this machine")
    copy = tmp_path / "data" / "mnist"
    copy.mkdir(parents=True)
    for gz in mnist.glob("*.gz"):
        data = gz.read_bytes()
        (copy / gz.name).write_bytes(data[:1000] if gz.name.startswith("train-images") else data)
    monkeypatch.setenv("METARL_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    short = ["--no-progress", "--set", "iterations=2", "tensorboard=false"]
    for out in (["--out", "run"], []):  # named, and the default runs/mnist-5w1s-<time>
        assert main(["train", "mnist-5w1s", *out, *short]) == 1
        err = capsys.readouterr().err
        assert _one_line(err) and "train-images-idx3-ubyte.gz cannot be decompressed" in err, err
        assert not (tmp_path / "run").exists()
        assert not any((tmp_path / "runs").glob("*"))  # no runs/ folder, or an empty one
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main(["train", "mnist-5w1s", "--out", str(kept), *short]) == 1
    assert (kept / "notes.txt").read_text() == "mine"


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("experiment: sinusoid\n")
    (run / "metrics.jsonl").write_text('{"iteration": 10, "meta/query_loss": 1.0}\n')
    assert _train("sinusoid", run, SINUSOID) == 0
    assert "never reached its first checkpoint; starting it again" in capsys.readouterr().err
    assert [m["iteration"] for m in read_metrics(run)] == [10, 20]
    assert load_checkpoint(run)["iteration"] == 20


def test_a_torn_metrics_line_is_dropped_with_a_notice(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train("sinusoid", run, SINUSOID, "iterations=10") == 0
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 20, "meta/query_loss": 0.1')  # cut off by a crash
    assert len(read_metrics(run)) == 1  # readers skip it
    capsys.readouterr()
    assert main(["train", "sinusoid", "--resume", str(run), "--no-progress",
                 "--set", "iterations=20"]) == 0  # fmt: skip
    assert "dropped 1 unreadable line(s)" in capsys.readouterr().err
    assert [m["iteration"] for m in read_metrics(run)] == [10, 20]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def _child(args: list[str], ignore_sigint: bool = False) -> subprocess.Popen:
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started with `&`

    return subprocess.Popen(
        [sys.executable, "-m", "metarl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=ignore if ignore_sigint else None,
    )  # fmt: skip


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.2)


LONG = ["iterations=1000000", "log_every=100", "checkpoint_every=100", "tensorboard=false"]


@pytest.mark.parametrize(
    ("signum", "ignore_sigint"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT-in-a-background-job"],
)
def test_a_signal_stops_training_cleanly(tmp_path, signum, ignore_sigint):
    run = tmp_path / "run"
    proc = _child(["train", "sinusoid", "--out", str(run), "--no-progress", "--set", *LONG],
                  ignore_sigint)  # fmt: skip
    try:
        _wait_for(run / "checkpoint.pt")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; the last checkpoint is intact" in err and "Traceback" not in err
    assert f"continue with `metarl train sinusoid --resume {run}`" in err
    assert load_checkpoint(run)["iteration"] % 100 == 0


def test_an_interruption_says_how_to_continue_only_what_can_be_continued(tmp_path):
    from argparse import Namespace

    from metarl.cli import _interrupted

    def said(**where: Path | None) -> str:
        return _interrupted(Namespace(command="train", experiment="sinusoid", **where))

    assert said(out=tmp_path, resume=None) == (
        f"{tmp_path} holds no checkpoint yet; `metarl train sinusoid --out {tmp_path}` starts it "
        "again"
    )
    assert "--resume RUN_DIR` (the newest runs/sinusoid-<time>)" in said(out=None, resume=None)
    evaluating = _interrupted(Namespace(command="evaluate", run_dir=tmp_path))
    assert evaluating == "eval.json was not written (an earlier one is left as it was)"


def test_two_processes_never_share_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    first = _child(["train", "sinusoid", "--out", str(run), "--no-progress", "--set", *LONG])
    try:
        _wait_for(run / "checkpoint.pt")
        assert _train("sinusoid", run, SINUSOID) == 1
        err = capsys.readouterr().err
        assert _one_line(err) and f"is in use by process {first.pid} (metarl train" in err, err
        assert main(["train", "sinusoid", "--resume", str(run), "--no-progress"]) == 1
        assert f"process {first.pid}" in capsys.readouterr().err
        assert main(["evaluate", str(run), "--no-progress"]) == 1
        assert "is in use" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
    # The owner died without a word: its lock went with it, and the run resumes.
    iteration = load_checkpoint(run)["iteration"]
    assert main(["train", "sinusoid", "--resume", str(run), "--no-progress",
                 "--set", f"iterations={iteration + 100}"]) == 0  # fmt: skip
    metrics = read_metrics(run)
    assert [m["iteration"] for m in metrics] == list(range(100, iteration + 101, 100))


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    import metarl.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and "ZeroDivisionError: division by zero" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "list"])


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")],
    ids=["disk-full", "permission"],
)
def test_the_machine_refusing_is_one_line_not_a_bug_report(capsys, monkeypatch, error):
    import metarl.cli as cli

    def refused(args):
        raise error

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=refused)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and error.strerror in err and "unexpected" not in err


def test_actions_of_a_diverged_policy_are_bad_input_and_a_numerical_failure():
    import numpy as np

    from metarl.envs.task_env import MAX_ACTION, DivergedActions, check_actions

    with pytest.raises(DivergedActions) as caught:
        check_actions(np.full(2, 10 * MAX_ACTION), (2,))
    assert isinstance(caught.value, ValueError)  # what gymnasium's callers expect
    assert isinstance(caught.value, FloatingPointError)  # one line from `metarl`


def test_standard_training_never_saves_a_non_finite_model(tmp_path, capsys):
    """An L2 weight that overflows the loss makes Adam's step NaN: the run stops with one line
    before writing a checkpoint."""
    from metarl.supervised.data.files import dataset_dir

    try:
        dataset_dir(None, "mnist")
    except Exception:  # noqa: BLE001 - any reason the data is not here
        pytest.skip("MNIST is not on this machine")
    out = tmp_path / "standard"
    assert main(["train", "standard-mnist", "--out", str(out), "--no-progress",
                 "--set", "l2=1e38", "epochs=1", "tensorboard=false"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert _one_line(err) and "not finite after epoch 1" in err
    assert not (out / "checkpoint.pt").exists()


def test_stored_files_that_do_not_fit_the_model_are_one_line(tmp_path, capsys):
    """A checkpoint whose weights, best model or iteration do not fit, and text files that are
    not text: one line naming the file, never the catch-all "unexpected" error."""
    run = tmp_path / "run"
    assert _train("sinusoid", run, SINUSOID) == 0
    good = load_checkpoint(run)
    cases = {
        "its weights do not fit the MLP its config builds (size mismatch for 0.weight":
            {**good, "model": {**good["model"], "0.weight": torch.zeros(3, 1)}},
        "its weights do not fit the MLP its config builds (Missing key":
            {**good, "model": {}},
        "not a metarl checkpoint (its best model is malformed)": {**good, "best": "x"},
        "not a metarl checkpoint (iteration -4)": {**good, "iteration": -4},
    }  # fmt: skip
    for message, state in cases.items():
        atomic_torch_save(state, run / "checkpoint.pt")
        resume = ["train", "sinusoid", "--resume", str(run), "--set", "iterations=30"]
        for command in (["evaluate", str(run), "--no-progress"], [*resume, "--no-progress"]):
            assert main(command) == 1, (message, command)
            err = capsys.readouterr().err
            assert _one_line(err) and message in err and "unexpected" not in err, err
    # A stored config that is not valid here is named as the checkpoint's, by every reader.
    path = run / "checkpoint.pt"
    for config, message in (
        ({**good["config"], "meta_batch_size": 0}, "meta_batch_size: 0 is below the minimum 1"),
        ({**good["config"], "experiment": "nosuch"}, "unknown experiment 'nosuch'"),
    ):
        atomic_torch_save({**good, "config": config}, path)
        commands = [["evaluate", str(run), "--no-progress"]]
        if config["experiment"] == "sinusoid":  # resume names the experiment: checked first
            commands.append(["train", "sinusoid", "--resume", str(run), "--no-progress"])
        for command in commands:
            assert main(command) == 2, (message, command)
            err = capsys.readouterr().err
            assert _one_line(err) and f"{path}: {message}" in err, err
        with pytest.raises(ConfigError, match=f"checkpoint.pt: {message}"):
            metarl.load_run(run)
    atomic_torch_save(good, run / "checkpoint.pt")
    # A damaged cache of the sinusoid baselines is trained again, with a notice.
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    cached = torch.load(run / "baselines.pt", weights_only=True)
    atomic_torch_save({**cached, "pretrained": {}}, run / "baselines.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "baselines.pt: its weights do not fit" in capsys.readouterr().err
    (run / "eval.json").write_bytes(b'{"schema_version": "\xff"}')
    with pytest.raises(ReportError, match="is not valid JSON"):
        read_report(run)
    from metarl.run import _unreadable

    assert _unreadable(PermissionError(13, "Permission denied")) == "[Errno 13] Permission denied"
    with (run / "metrics.jsonl").open("ab") as f:  # a line with a byte that is not UTF-8
        f.write(b'{"iteration": 20, "x": "\xff"}\n')
    assert read_metrics(run)[-1]["iteration"] == 20
    not_text = tmp_path / "binary.yaml"
    not_text.write_bytes(b"\xff\xfe\x00")
    assert main(["config", str(not_text)]) == 2
    assert "binary.yaml: not a text file (YAML is UTF-8)" in capsys.readouterr().err


def test_a_run_trained_on_a_gpu_is_used_here_with_device_cpu(tmp_path, capsys):
    """A run carried from a GPU machine: refused in one line that says what to do, then
    evaluated, resumed and loaded here with ``device=cpu`` (the CUDA device is faked in the
    stored config, so this runs on any machine)."""
    import metarl

    run = tmp_path / "run"
    assert _train("sinusoid", run, SINUSOID) == 0
    state = load_checkpoint(run)
    atomic_torch_save({**state, "config": {**state["config"], "device": "cuda:7"}},
                      run / "checkpoint.pt")  # fmt: skip
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and "(the run trained there); use it here with --set device=cpu" in err
    assert main(["evaluate", str(run), "--no-progress", "--set", "device=cuda:7"]) == 2
    err = capsys.readouterr().err  # the device asked for here: no advice about the checkpoint
    assert "device: 'cuda:7' but" in err and "trained there" not in err
    assert main(["evaluate", str(run), "--no-progress", "--set", "device=cpu"]) == 0
    assert metarl.load_run(run).config.device == "cpu"
    assert main(["train", "sinusoid", "--resume", str(run), "--no-progress", "--set",
                 "iterations=30", "device=cpu"]) == 0  # fmt: skip
    assert load_checkpoint(run)["iteration"] == 30


def test_command_line_mistakes_are_named_in_one_line(tmp_path, capsys):
    experiment_free = tmp_path / "foo.yaml"
    experiment_free.write_text("iterations: 3\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("# My sinusoid: fewer iterations.\nexperiment: sinusoid\niterations: 30\n")
    listed_file = tmp_path / "notes.txt"
    listed_file.write_text("not a config\n")
    assert main(["list", str(mine)]) == 0  # a YAML file, as `metarl list --help` says
    listed = capsys.readouterr().out
    assert listed.startswith(f"{mine}: My sinusoid\n") and "iterations" in listed
    for command, message in (
        (["config", str(experiment_free)], "foo.yaml: say which experiment it configures"),
        (["check-step", str(listed_file)], "not a run directory, a YAML file or an"),
        (["check-step", str(tmp_path / "no.yaml")], "config file not found"),
        (["check-step", str(mine)], "sinusoid: check-step measures the meta-RL TRPO step"),
        (["data", "list", "nosuch"], "unknown dataset 'nosuch'; one of omniglot"),
        (["data", "fetch"], "which dataset? `metarl data fetch NAME`"),
        (["view", str(tmp_path), "--height", "0"], "--height 0: give 16 to 4096 pixels"),
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert _one_line(err) and message in err, (command, err)
    for command in (["check-step"], ["evaluate"], ["view"], ["analyze", "--out", str(tmp_path)]):
        assert main([*command, str(tmp_path / "nope")]) == 1, command  # one wording and code
        assert f"run directory not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # argparse: a usage error
        main(["train", "sinusoid", "--out", str(tmp_path / "a"), "--resume", str(tmp_path)])
    assert stopped.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --set took the experiment for a KEY=VALUE
        main(["config", "--set", "iterations=5", "sinusoid"])
    assert "(--set takes every word after it: put it last)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no --set typed: no hint about it
        main(["config"])
    assert "required: experiment\n" in capsys.readouterr().err
