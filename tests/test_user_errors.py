"""Mistakes a user makes get one line that names the problem and the way out: a committed zoo
entry is not overwritten, a folder that is not a run (or not yet one) says which, a tensor of the
wrong shape is named, and an evaluation reads what its table measures."""

from __future__ import annotations

import errno
import io
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import metarl
from metarl.api import evaluation_dir
from metarl.cli import main
from metarl.config import ConfigError
from metarl.experiments import experiment_names, get_experiment, load_config
from metarl.loop import LOGGED_BAR_SECONDS, progress_bar
from metarl.run import (
    CHECKPOINT,
    ZOO_MARKER,
    RunError,
    default_baselines_dir,
    load_checkpoint,
    run_lock,
    zoo_root,
)

ROOT = Path(__file__).parents[1]
TINY = {"iterations": 20, "log_every": 10, "checkpoint_every": 20, "tensorboard": False,
        "baseline_iterations": 5, "eval_tasks": 4, "eval_shots": [10],
        "eval_steps": 1}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sinusoid run of 20 iterations, evaluated (seconds)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    metarl.train("sinusoid", TINY, out=out, evaluate=True, progress=False)
    return out


def test_the_committed_zoo_is_marked():
    assert zoo_root(ROOT / "zoo" / "sinusoid") == ROOT / "zoo"
    assert zoo_root(ROOT / "zoo" / "beyond-protocol" / "ant-dir-800") == ROOT / "zoo"
    assert zoo_root(ROOT / "tests") is None


def test_a_zoo_entry_is_evaluated_as_a_copy_and_never_resumed(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where runs/ goes
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / ZOO_MARKER).write_text("a zoo\n")
    entry = zoo / "sinusoid"
    shutil.copytree(tiny_run, entry, ignore=shutil.ignore_patterns(".lock", "plots", "hparams"))
    committed = {f.name: f.read_bytes() for f in entry.iterdir()}
    report = metarl.evaluate(entry, {"eval_tasks": 2}, progress=False)
    assert evaluation_dir(entry) == Path("runs/zoo/sinusoid")
    assert metarl.read_report("runs/zoo/sinusoid") == report
    assert report.config["eval_tasks"] == 2
    assert {f.name: f.read_bytes() for f in entry.iterdir()} == committed  # untouched
    # the copy is refreshed from the zoo each time: the protocol's table comes back
    again = metarl.evaluate(entry, progress=False)
    assert again.curves == metarl.read_report(tiny_run).curves
    hint = re.escape(f"mkdir -p runs && cp -r {entry} runs/sinusoid; then --resume runs/sinusoid")
    with pytest.raises(RunError, match=rf"committed zoo entry: continue a copy of it \({hint}\)"):
        metarl.train("sinusoid", {"iterations": 30}, resume=entry, progress=False)
    assert load_checkpoint(entry)["iteration"] == 20


def test_a_meta_rl_zoo_entry_is_copied_with_its_baselines():
    entry, baselines = ROOT / "zoo" / "navigation", ROOT / "zoo" / "baselines" / "navigation"
    hint = re.escape(f"&& mkdir -p runs/baselines && cp -r {baselines} runs/baselines/")
    with pytest.raises(RunError, match=hint):
        metarl.train("navigation", resume=entry, progress=False)


def test_a_meta_rl_zoo_entry_is_evaluated_with_the_zoos_baselines(tmp_path, monkeypatch):
    """A policy in a zoo is evaluated as a copy under runs/zoo/, against the baselines the zoo
    keeps beside it (none missing, none retrained), and the entry stays as committed."""
    monkeypatch.chdir(tmp_path)
    zoo = tmp_path / "zoo"
    (zoo / "baselines").mkdir(parents=True)
    (zoo / ZOO_MARKER).write_text("a zoo\n")
    entry = zoo / "navigation"
    shutil.copytree(ROOT / "zoo" / "navigation", entry, ignore=shutil.ignore_patterns("plots"))
    shutil.copytree(ROOT / "zoo" / "baselines" / "navigation", zoo / "baselines" / "navigation")
    files = [*entry.iterdir(), *(zoo / "baselines" / "navigation").iterdir()]
    committed = {f: f.read_bytes() for f in files}
    report = metarl.evaluate(entry, {"eval_tasks": 2, "eval_episodes_per_task": 2}, progress=False)
    assert report.missing == [] and set(report.baselines) >= {"pretrained", "oracle"}
    assert report.config["baselines_dir"] == str(zoo / "baselines" / "navigation")
    assert metarl.read_report("runs/zoo/navigation") == report
    assert {f: f.read_bytes() for f in files} == committed  # nothing retrained or rewritten


def test_folders_that_are_not_runs_say_so(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(ROOT / "docs")]) == 1
    assert f"{ROOT / 'docs'} is not a run directory (no checkpoint.pt or config.yaml)" in (
        capsys.readouterr().err
    )
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(tiny_run / "config.yaml", started)
    with pytest.raises(RunError, match="never reached its first checkpoint"):
        load_checkpoint(started)
    with run_lock(started, "metarl train sinusoid"):  # a training before its first checkpoint
        with pytest.raises(RunError, match=r"in use by process \d+ \(metarl train sinusoid\) "
                                           "and has no checkpoint.pt yet"):  # fmt: skip
            load_checkpoint(started)


def test_an_unwritable_run_directory_is_one_line(tiny_run, tmp_path, monkeypatch):
    def refuse(*args: object, **kwargs: object) -> int:  # only run_lock's calls reach it
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("metarl.run.os.open", refuse)  # root ignores file modes: fake the OS
    with pytest.raises(RunError, match=r"cannot write to .* \(Permission denied\): copy the run"):
        with run_lock(tiny_run, "metarl evaluate"):  # a run: the way out is a copy
            pass
    with pytest.raises(RunError, match=r"cannot write to \S+ \(Permission denied\)$"):
        with run_lock(tmp_path / "new", "metarl train"):  # no run yet: nothing to copy
            pass


def test_tensors_of_the_wrong_shape_are_named(tiny_run):
    run = metarl.load_run(tiny_run)
    x = torch.linspace(-5, 5, 10)
    with pytest.raises(ConfigError, match=r"adapt\(\): support_x has shape \(10,\); the model "
                                          r"takes \(B, 1\)"):  # fmt: skip
        run.adapt(x, torch.sin(x))
    with pytest.raises(ConfigError, match=r"adapt\(\): support_y has shape \(10,\)"):
        run.adapt(x[:, None], torch.sin(x))
    with pytest.raises(ConfigError, match=r"adapt\(\): 10 inputs but 3 targets"):
        run.adapt(x[:, None], torch.sin(x)[:3, None])
    with pytest.raises(ConfigError, match=r"predict\(\): x has shape \(10,\)"):
        run.predict(x)
    assert run.predict(x[:, None], run.adapt(x[:, None], torch.sin(x)[:, None])).shape == (10, 1)


def test_a_classifier_takes_images_and_integer_labels():
    run = metarl.load_run(ROOT / "zoo" / "omniglot-5w1s")
    images, labels = torch.rand(5, 1, 28, 28), torch.arange(5)
    with pytest.raises(ConfigError, match=r"predict\(\): x has shape \(5, 28, 28\); the model "
                                          r"takes \(B, 1, 28, 28\)"):  # fmt: skip
        run.predict(images[:, 0])
    with pytest.raises(ConfigError, match=r"support_y has shape \(5, 1\); the model takes \(B,\)"):
        run.adapt(images, labels[:, None])
    assert run.predict(images, run.adapt(images, labels, steps=1)).shape == (5, 5)
    mean, log_std = metarl.load_run(ROOT / "zoo" / "navigation").predict(torch.zeros(3, 2))
    assert mean.shape == log_std.shape == (3, 2)  # a policy: an observation's size is the env's


def test_a_support_statistics_classifier_predicts_as_its_evaluation_scores():
    """With bn_policy=support_statistics a query is normalised by its task's support set:
    predict() takes support_x and gives the logits the evaluation scores (the problem's query
    pass on a one-task batch), differing from a pass that normalises the queries by
    themselves; without support_x it refuses to guess, and a transductive run refuses it."""
    from metarl.algorithms import make_algorithm
    from metarl.core import TaskBatch
    from metarl.trained import LoadedRun

    config = load_config("omniglot-5w1s", {"bn_policy": "support_statistics"})
    experiment = get_experiment("omniglot-5w1s")
    torch.manual_seed(0)
    model = experiment.build_model(config)
    run = LoadedRun(model, config, 0, Path("."), "last", make_algorithm(config, model), {})
    support_x, labels, query_x = torch.rand(5, 1, 28, 28), torch.arange(5), torch.rand(7, 1, 28, 28)
    params = run.adapt(support_x, labels, steps=2)
    batch = TaskBatch(support_x[None], labels[None], query_x[None], labels[:1].expand(1, 7))
    scored = experiment.problem(config).query_predictions(
        model, {n: p[None] for n, p in params.items()}, batch
    )[0]
    predicted = run.predict(query_x, params, support_x=support_x)
    torch.testing.assert_close(predicted, scored)
    alone = run.model(query_x)  # θ, queries normalised by themselves
    assert not torch.allclose(run.predict(query_x, support_x=support_x), alone, atol=1e-3)
    with pytest.raises(ConfigError, match=r"predict\(\): .*support_statistics\): pass support_x"):
        run.predict(query_x, params)
    with pytest.raises(ConfigError, match=r"predict\(\): support_x has shape \(5, 28, 28\)"):
        run.predict(query_x, params, support_x=support_x[:, 0])
    transductive = replace(run, config=load_config("omniglot-5w1s"))
    with pytest.raises(ConfigError, match=r"takes no support set .*: leave support_x out"):
        transductive.predict(query_x, support_x=support_x)


@pytest.mark.parametrize("name", experiment_names())
def test_each_family_declares_the_shapes_its_model_takes(name):
    """The shapes adapt() and predict() check against are the ones the built model runs on: a
    batch of zeros of the declared input shape gives one prediction per example, of the target's
    shape for a regressor and one logit per class for a classifier."""
    needs_folder = {"data_dir": "/nonexistent"} if name.startswith("miniimagenet") else {}
    experiment, config = get_experiment(name), load_config(name, needs_folder)
    if experiment.io_shapes is None:  # a policy
        assert experiment.problem is None
        return
    inputs, targets = experiment.io_shapes(config)
    with torch.no_grad():
        out = experiment.build_model(config).eval()(torch.zeros(2, *inputs))
    classes = getattr(config, "n_way", getattr(config, "n_classes", None))
    assert tuple(out.shape) == ((2, *targets) if targets else (2, classes))
    with pytest.raises(RuntimeError):  # and a missing feature/channel dimension fails
        experiment.build_model(config)(torch.zeros(2, *inputs[1:]))


def test_baselines_are_looked_for_beside_the_run_or_in_its_zoo(tmp_path):
    assert default_baselines_dir(tmp_path / "runs" / "x", "ant-dir") == (
        tmp_path / "runs" / "baselines" / "ant-dir"
    )
    nested = ROOT / "zoo" / "time-to-quality" / "ant-dir-remedies" / "tanh,-α-=-0.5,-max_kl-=-0.02"
    zoo_baselines = ROOT.resolve() / "zoo" / "baselines" / "ant-dir"
    assert default_baselines_dir(nested, "ant-dir") == zoo_baselines
    assert default_baselines_dir(nested, "ant-dir").is_dir()


def test_an_error_bar_needs_two_test_tasks(tiny_run):
    with pytest.raises(ConfigError, match="eval_tasks: 1 is below the minimum 2"):
        metarl.evaluate(tiny_run, {"eval_tasks": 1}, progress=False)


def test_the_evaluation_says_what_it_measured(tiny_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    state = torch.load(unfinished / CHECKPOINT, weights_only=True)
    state["config"]["iterations"] = 40  # as a run stopped at half its budget would say
    torch.save(state, unfinished / CHECKPOINT)
    capsys.readouterr()
    assert main(["evaluate", str(unfinished), "--no-progress"]) == 0
    caption = capsys.readouterr().out.splitlines()[0]
    assert caption == (
        "sinusoid: mean squared error on the query points, mean over 4 test tasks, ± the 95% "
        "interval of the mean; the last model, iteration 20 (the run is not finished: 20 of 40 "
        "iterations)"
    )


def test_a_logged_progress_bar_redraws_rarely():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with progress_bar(range(3), file=io.StringIO()) as logged:
        assert logged.mininterval == LOGGED_BAR_SECONDS
    with progress_bar(range(3), file=Terminal()) as shown:
        assert shown.mininterval < 1.0  # tqdm's own default


def test_an_edited_config_record_is_pointed_out(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metarl.evaluate(run, progress=False)
    assert "note:" not in capsys.readouterr().err  # the record as training wrote it
    record = (run / "config.yaml").read_text()
    for edit in ("eval_tasks: 7\n", "eval_tasks: [\n"):  # a changed setting; not even YAML
        (run / "config.yaml").write_text(record + edit)
        report = metarl.evaluate(run, progress=False)
        assert report.config["eval_tasks"] == 4  # the checkpoint's config
        assert f"note: {run / 'config.yaml'} differs from the config in checkpoint.pt" in (
            capsys.readouterr().err
        )


def test_the_command_line_imports_your_own_environment(tmp_path, capsys, monkeypatch):
    from metarl.rl import task_envs

    monkeypatch.setattr(task_envs, "_BATCHED", dict(task_envs._BATCHED))  # registered here only
    plugin = tmp_path / "my_envs.py"
    plugin.write_text(
        "from metarl.rl.task_envs import make_batched_env, register_batched_env\n"
        "register_batched_env('my-navigation',\n"
        "                     lambda n, h: make_batched_env('navigation2d', n, h))\n"
    )
    assert main(["config", "navigation", "--set", "env=my-navigation"]) == 2
    assert "metarl --import MODULE_OR_FILE" in capsys.readouterr().err
    assert (
        main(["--import", str(plugin), "config", "navigation", "--set", "env=my-navigation"]) == 0
    )
    assert "env: my-navigation" in capsys.readouterr().out
    assert main(["--import", str(tmp_path / "none.py"), "list"]) == 1
    assert capsys.readouterr().err.strip().endswith("none.py: no such file")
    assert main(["--import", "no_such_module_here", "list"]) == 1
    assert "No module named 'no_such_module_here'" in capsys.readouterr().err


def test_import_finds_modules_beside_the_command_and_beside_a_file(tmp_path, monkeypatch):
    from metarl.plugins import import_plugin

    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    monkeypatch.setattr("sys.modules", dict(__import__("sys").modules))
    (tmp_path / "helper_for_import.py").write_text("VALUE = 7\n")
    (tmp_path / "plugin_file.py").write_text("from helper_for_import import VALUE\nSEEN = VALUE\n")
    package = tmp_path / "plugin_package"
    package.mkdir()
    (package / "__init__.py").write_text("from .inner import SEEN\n")
    (package / "inner.py").write_text("SEEN = 8\n")
    monkeypatch.chdir(tmp_path)
    import_plugin("helper_for_import")  # a module name, from the current folder
    import_plugin(str(tmp_path / "plugin_file.py"))  # a file importing its neighbour
    import_plugin(str(package))  # a package folder, relative imports inside
    modules = __import__("sys").modules
    assert modules["metarl_plugin_plugin_file"].SEEN == 7
    assert modules["plugin_package"].SEEN == 8
    assert __import__("sys").path.count(str(tmp_path)) == 1  # three imports, one entry
