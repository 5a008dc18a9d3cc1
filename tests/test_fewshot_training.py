"""Few-shot classification end to end through the CLI (tiny settings), config checks, and the
benchmark's meta-gradient agreement."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metarl
from metarl.algorithms import ALGORITHMS
from metarl.cli import main
from metarl.config import ConfigError
from metarl.core import TaskBatch
from metarl.experiments import load_config
from metarl.reports import read_report
from metarl.run import atomic_torch_save, load_checkpoint, read_metrics
from metarl.supervised.data.files import resolve_data_dir

DATA_ROOT = resolve_data_dir(None)[0]  # $METARL_DATA as pytest starts, else ../shared/data

TINY = [
    "iterations=4", "meta_batch_size=4", "log_every=2", "checkpoint_every=2", "tensorboard=false",
    "filters=8", "eval_tasks=20", "eval_steps=2", "eval_chunk=8",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch, request):
    monkeypatch.setenv("METARL_DATA", str(DATA_ROOT))
    monkeypatch.setenv("METARL_CACHE", str(request.config.cache.mkdir("metarl-data")))


def _need(dataset: str) -> None:
    folder = DATA_ROOT / dataset
    if not folder.is_dir():
        pytest.skip(f"{dataset} not available at {folder}")


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["meta_gradient=first_order", "bn_policy=support_statistics", "split=vinyals"],
        ["algorithm=anil", "eval_nil=true", "eval_prototypes=true"],
    ],
)
def test_omniglot_train_and_evaluate_via_cli(tmp_path, capsys, extra):
    _need("omniglot")
    run = tmp_path / "run"
    code = main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress", "--evaluate",
                 "--set", *TINY, *extra])  # fmt: skip
    assert code == 0
    assert [m["iteration"] for m in read_metrics(run)] == [2, 4]
    assert all(0.0 <= m["meta/accuracy"] <= 1.0 for m in read_metrics(run))
    report = read_report(run)
    curve, *nil = report.curves
    if "eval_nil=true" in extra:  # the probes that adapt nothing: one value, at step 0
        assert [(c.method, c.steps) for c in nil] == [("nil", [0]), ("prototypes", [0])]
        assert all(0 <= c.mean[0] <= 1 for c in nil)
    assert curve.steps == [0, 1, 2] and len(curve.error) == 3 and report.error_bar == "ci95"
    before, accuracy, _ = report.headline_values()
    assert 0.0 <= accuracy <= 1.0 and accuracy == curve.mean[-1] and before == curve.mean[0]
    assert report.protocol["episodes"] == 20 and report.model.iteration == 4
    assert (run / "plots" / "accuracy_vs_steps.png").stat().st_size > 1000
    shown = capsys.readouterr().out
    assert (
        ("| ANIL |" in shown and "| NIL (no head, cosine) |" in shown)
        if nil
        else "| MAML |" in shown
    )
    # `metarl evaluate` on the finished run gives the same numbers (fixed test episodes).
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert read_report(run).curves == report.curves


PLUGIN = """
from torch import nn
from metarl.supervised.networks import register_network

def linear(input_shape, n_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] ** 2, n_outputs))

register_network("linear", linear)
"""


def test_a_registered_network_trains_evaluates_and_loads_by_name(tmp_path, capsys, monkeypatch):
    """``network: NAME`` builds the registered network under the config's seed, trains and
    evaluates it from the command line after ``--import`` of the code that registers it, and
    names the fix in one line where that import is missing."""
    _need("omniglot")
    from metarl.config import describe
    from metarl.seeding import seeded
    from metarl.supervised import networks
    from metarl.supervised.classification_experiment import build_model

    monkeypatch.setattr(networks, "_REGISTERED", {})  # what this test registers stays here
    plugin = tmp_path / "linear_net.py"
    plugin.write_text(PLUGIN)
    run = tmp_path / "run"
    code = main(["--import", str(plugin), "train", "omniglot-5w1s", "--out", str(run),
                 "--no-progress", "--evaluate", "--set", *TINY, "network=linear"])  # fmt: skip
    assert code == 0 and networks.network_names() == ["conv4", "mlp", "linear"]
    config = load_config("omniglot-5w1s", {"network": "linear", "seed": 3})
    shown = {row.name: row.allowed for row in describe(config)}  # what `metarl list` prints
    assert shown["network"] == "conv4 | mlp | linear"
    with seeded(3):
        expected = networks.registered_network("linear")((1, 28, 28), 5)
    built = build_model(config)
    assert all(torch.equal(a, b) for a, b in zip(built.parameters(), expected.parameters()))
    run_model = metarl.load_run(run).model
    assert [p.shape for p in run_model.parameters()] == [(5, 784), (5,)]
    assert 0.0 <= read_report(run).curves[0].mean[-1] <= 1.0
    capsys.readouterr()
    assert main(["--import", str(plugin), "analyze", str(run), "--out", str(tmp_path / "an"),
                 "--no-progress"]) == 2  # fmt: skip
    assert "network is your own ('linear')" in capsys.readouterr().err
    monkeypatch.setattr(networks, "_REGISTERED", {})  # as a new process without --import
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "network: 'linear' is not one of" in error and "--import" in error
    assert len(error.splitlines()) == 1
    with pytest.raises(ValueError, match="built-in"):
        networks.register_network("conv4", lambda input_shape, n_outputs: nn.Identity())


def _raises(input_shape, n_outputs):
    raise RuntimeError("my builder broke")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_raises, "raised RuntimeError: my builder broke"),
        (lambda shape, n: len, "returned builtin_function_or_method, not an nn.Module"),
        (lambda input_shape, n_outputs: nn.Flatten(), "not an nn.Module with parameters"),
        (lambda input_shape, n_outputs: nn.Sequential(
            nn.Flatten(), nn.Linear(784, n_outputs), nn.BatchNorm1d(n_outputs)),
         "has BatchNorm1d with running statistics"),
        (lambda input_shape, n_outputs: nn.Sequential(nn.Flatten(), nn.Linear(784, 8)),
         "to (2, 8); the classifier needs logits (2, 5)"),
        (lambda shape, n: nn.Linear(10, n), "failed on images (2, 1, 28, 28)"),
    ],
)  # fmt: skip
def test_a_registered_network_that_breaks_the_rules_is_one_line_before_any_run(
    tmp_path, capsys, monkeypatch, build, message
):
    """The user's builder is checked before the run directory is made: what it returns, its
    BatchNorm, and the shape of its logits; the error names the builder, exit code 2."""
    _need("omniglot")
    from metarl.supervised import networks

    monkeypatch.setattr(networks, "_REGISTERED", {"mine": build})
    run = tmp_path / "run"
    assert main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress", "--set", *TINY,
                 "network=mine"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert message in error and "network 'mine'" in error and len(error.splitlines()) == 1
    assert not run.exists()


def test_validation_during_training_is_the_evaluation_on_validation_classes(tmp_path, capsys):
    """`val/accuracy` at an iteration equals `metarl evaluate` of that checkpoint on the same
    validation episodes, and validating leaves the training itself unchanged."""
    _need("omniglot")
    runs = {}
    for name, extra in (("validated", ["val_every=2", "val_tasks=12"]), ("plain", [])):
        runs[name] = tmp_path / name
        assert main(["train", "omniglot-5w1s", "--out", str(runs[name]), "--no-progress",
                     "--set", *TINY, *extra]) == 0  # fmt: skip
    summaries = [line for line in capsys.readouterr().out.splitlines() if "last log:" in line]
    assert ["val/accuracy" in line for line in summaries] == [True, False]
    logged = read_metrics(runs["validated"])
    assert [m["iteration"] for m in logged] == [2, 4]
    assert all(0.0 <= m["val/accuracy"] <= 1.0 and m["val/accuracy_ci95"] > 0 for m in logged)
    assert "val/accuracy" not in read_metrics(runs["plain"])[-1]
    validated, plain = (load_checkpoint(runs[n])["model"] for n in ("validated", "plain"))
    assert validated.keys() == plain.keys()
    assert all(torch.equal(validated[k], plain[k]) for k in plain)
    assert main(["evaluate", str(runs["validated"]), "--no-progress",
                 "--set", "eval_subset=val", "eval_tasks=12"]) == 0  # fmt: skip
    curve = read_report(runs["validated"]).curves[0]
    assert logged[-1]["val/accuracy"] == pytest.approx(curve.mean[-1], abs=1e-6)
    assert logged[-1]["val/accuracy_before"] == pytest.approx(curve.mean[0], abs=1e-6)
    assert logged[-1]["val/accuracy_ci95"] == pytest.approx(curve.error[-1], abs=1e-6)


def test_the_best_validated_model_is_kept_across_a_resume_and_tested_on_request(tmp_path, capsys):
    """The checkpoint keeps the model of the highest `val/accuracy` logged; `eval_model=best`
    tests it (its evaluation on the validation episodes is the logged validation), and a
    resumed run keeps the same one as an uninterrupted run."""
    _need("omniglot")
    validated = [*TINY, "val_every=2", "val_tasks=12"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", "omniglot-5w1s", "--out", str(whole), "--no-progress",
                 "--set", *validated, "iterations=8"]) == 0  # fmt: skip
    assert main(["train", "omniglot-5w1s", "--out", str(resumed), "--no-progress",
                 "--set", *validated, "iterations=4"]) == 0  # fmt: skip
    assert main(["train", "omniglot-5w1s", "--resume", str(resumed), "--no-progress",
                 "--set", "iterations=8"]) == 0  # fmt: skip
    logged = read_metrics(whole)
    assert [m["iteration"] for m in logged] == [2, 4, 6, 8]
    top = max(logged, key=lambda m: m["val/accuracy"])  # the first of equals, as kept
    best, other = load_checkpoint(whole)["best"], load_checkpoint(resumed)["best"]
    assert (best["iteration"], best["val_accuracy"]) == (top["iteration"], top["val/accuracy"])
    assert (other["iteration"], other["val_accuracy"]) == (best["iteration"], best["val_accuracy"])
    assert all(torch.equal(best["model"][k], other["model"][k]) for k in best["model"])

    capsys.readouterr()
    assert main(["evaluate", str(whole), "--no-progress", "--set", "eval_model=best",
                 "eval_subset=val", "eval_tasks=12"]) == 0  # fmt: skip
    assert f"; the best-validated model, from iteration {top['iteration']}" in (
        capsys.readouterr().out
    )
    report = read_report(whole)
    assert (report.model.choice, report.model.iteration) == ("best", top["iteration"])
    assert report.model.checkpoint_iteration == 8
    assert report.curves[0].mean[-1] == pytest.approx(top["val/accuracy"], abs=1e-6)
    assert report.curves[0].mean[0] == pytest.approx(top["val/accuracy_before"], abs=1e-6)

    assert metarl.load_run(whole).which == "last"  # the paper's protocol tests the last
    loaded = metarl.load_run(whole, "best")
    assert (loaded.which, loaded.iteration) == ("best", top["iteration"])
    assert all(torch.equal(loaded.model.state_dict()[k], best["model"][k]) for k in best["model"])


def _scripted_validation(monkeypatch, scores: list[float], seen: list[dict[str, torch.Tensor]]):
    """Training's validation replaced by one that returns ``scores`` in turn and records, as
    an independent copy, the model and step sizes it was given each time."""
    from metarl.supervised import classification_experiment

    def validation(config):
        def validate(model, algorithm):
            seen.append({**{k: v.clone() for k, v in model.state_dict().items()},
                         **{f"algorithm.{k}": v.clone()
                            for k, v in algorithm.state_dict().items()}})  # fmt: skip
            return {"val/accuracy": scores[len(seen) - 1]}

        return validate

    monkeypatch.setattr(classification_experiment, "validation", validation)


def test_the_kept_best_model_is_the_one_its_validation_scored(tmp_path, monkeypatch, capsys):
    """Validations score 0.5, NaN, 0.9, 0.7, 0.9, 0.8 at iterations 2-12: the checkpoint keeps
    the model (and Meta-SGD's learned step sizes) as they were at 6, across a resume at 8, and
    `eval_model=best` / `load_run(run, "best")` restore exactly those, not the last."""
    _need("omniglot")
    seen: list[dict[str, torch.Tensor]] = []
    _scripted_validation(monkeypatch, [0.5, math.nan, 0.9, 0.7, 0.9, 0.8], seen)
    run = tmp_path / "run"
    settings = [*TINY, "val_every=2", "algorithm=meta_sgd", "meta_lr=0.01"]
    assert main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress",
                 "--set", *settings, "iterations=8"]) == 0  # fmt: skip
    assert main(["train", "omniglot-5w1s", "--resume", str(run), "--no-progress",
                 "--set", "iterations=12"]) == 0  # fmt: skip
    assert len(seen) == 6
    state = load_checkpoint(run)
    best = state["best"]
    assert (best["iteration"], best["val_accuracy"], best["since"]) == (6, 0.9, 0)
    at_six, last = seen[2], seen[5]
    kept = {**best["model"], **{f"algorithm.{k}": v for k, v in best["algorithm"].items()}}
    assert kept.keys() == at_six.keys() and any(k.startswith("algorithm.") for k in kept)
    assert all(torch.equal(kept[k], at_six[k]) for k in kept)
    assert not all(torch.equal(kept[k], last[k]) for k in kept)  # training moved on after 6

    loaded = metarl.load_run(run, "best")
    steps = loaded.algorithm.state_dict()
    restored = {**loaded.model.state_dict(), **{f"algorithm.{k}": v for k, v in steps.items()}}
    assert all(torch.equal(restored[k], at_six[k]) for k in at_six)
    assert (loaded.which, loaded.iteration) == ("best", 6)
    assert main(["evaluate", str(run), "--no-progress", "--set", "eval_model=best"]) == 0
    chosen = read_report(run).model
    assert (chosen.choice, chosen.iteration, chosen.checkpoint_iteration) == ("best", 6, 12)
    assert chosen.validation_accuracy == 0.9 and chosen.note == ""
    # A best entry that lost its step sizes (a damaged file) is named in one line.
    damaged = {k: v for k, v in best.items() if k != "algorithm"}
    capsys.readouterr()
    atomic_torch_save({**state, "best": damaged}, run / "checkpoint.pt")
    assert main(["evaluate", str(run), "--no-progress", "--set", "eval_model=best"]) == 1
    err = capsys.readouterr().err.strip()
    assert "meta-learned step sizes" in err and "\n" not in err and "unexpected" not in err


def test_a_run_resumed_from_a_checkpoint_without_a_best_model_says_where_its_best_starts(
    tmp_path, monkeypatch
):
    _need("omniglot")
    seen: list[dict[str, torch.Tensor]] = []
    _scripted_validation(monkeypatch, [0.9, 0.5, 0.6], seen)
    run = tmp_path / "run"
    assert main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress",
                 "--set", *TINY, "val_every=2", "iterations=2"]) == 0  # fmt: skip
    state = load_checkpoint(run)
    del state["best"], state["best_since"]  # as written before best models were kept
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match="no best model .it did not validate yet, or it was"):
        metarl.load_run(run, "best")
    assert main(["train", "omniglot-5w1s", "--resume", str(run), "--no-progress",
                 "--set", "iterations=6"]) == 0  # fmt: skip
    best = load_checkpoint(run)["best"]
    assert (best["iteration"], best["since"]) == (6, 2)  # 0.9 at 2 was before the record
    assert main(["evaluate", str(run), "--no-progress", "--set", "eval_model=best"]) == 0
    assert read_report(run).model.note == "chosen among the validations from iteration 2 on"


def test_a_best_model_needs_validations():
    with pytest.raises(ConfigError, match="eval_model: best is chosen by validations"):
        load_config("omniglot-5w1s", ["eval_model=best", "val_every=0"])
    with pytest.raises(ConfigError, match="eval_model: best is chosen by validations"):
        load_config("mnist-5w1s", ["eval_model=best", "val_every=1000"])
    assert load_config("omniglot-20w1s", ["eval_model=best"]).eval_model == "best"


def test_validation_settings():
    with pytest.raises(ConfigError, match=r"val_every \(150\) must be a multiple of log_every"):
        load_config("omniglot-5w1s", ["val_every=150"])
    assert load_config("omniglot-20w1s").validates  # the paper configs validate
    # without validation classes the setting is ignored, so a dataset override still trains
    assert not load_config("omniglot-5w1s", ["dataset=mnist"]).validates
    episodes = load_config("omniglot-5w1s", ["episodes=meta_dataset", "meta_batch_size=1"])
    assert not episodes.validates


def test_mnist_train_via_cli(tmp_path):
    _need("mnist")
    run = tmp_path / "run"
    assert main(["train", "mnist-5w1s", "--out", str(run), "--no-progress", "--evaluate",
                 "--set", *TINY, "eval_k_query=3"]) == 0  # fmt: skip
    report = read_report(run)
    assert report.protocol["classes"] == "mnist test (5 classes)"
    assert report.protocol["k_query"] == 3


def test_meta_dataset_episodes_train_and_evaluate_via_cli(tmp_path, capsys):
    """Omniglot and MNIST episodes together: a report per source and for all (NIL's too), the
    plot labelled by source, and `metarl evaluate` repeats the numbers (episodes drawn from
    eval_seed)."""
    _need("omniglot")
    _need("mnist")
    run = tmp_path / "run"
    code = main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress", "--evaluate",
                 "--set", *TINY, "meta_batch_size=1", "episodes=meta_dataset",
                 "sources=[omniglot, mnist]", "max_ways=8", "algorithm=proto_maml",
                 "meta_gradient=first_order", "eval_nil=true",
                 "eval_prototypes=true"])  # fmt: skip
    assert code == 0
    report = read_report(run)
    counts = report.protocol["episodes_per_source"]
    assert sum(counts.values()) == 20 and report.protocol["max_ways"] == 8
    assert report.headline.setting == "all" and report.headline.method == "meta_learned"
    by_method = {}
    for method, steps in (("meta_learned", [0, 1, 2]), ("nil", [0]), ("prototypes", [0])):
        curves = {c.setting: c for c in report.curves if c.method == method}
        assert set(curves) == {"omniglot", "mnist", "all"}
        assert all(c.steps == steps and 0 <= min(c.mean) <= max(c.mean) <= 1
                   for c in curves.values())  # fmt: skip
        weighted = sum(counts[name] * c.mean[-1] for name, c in curves.items() if name != "all")
        assert abs(curves["all"].mean[-1] - weighted / 20) < 1e-9  # every episode's mean
        by_method[method] = curves
    every_mean = by_method["meta_learned"]["all"].mean[-1]
    for name, probe in by_method["prototypes"].items():  # ProtoMAML's step 0 is that probe
        assert probe.mean[0] == pytest.approx(by_method["meta_learned"][name].mean[0], abs=1e-9)
    groups = report.details["by_ways"]  # 5 to 8 ways: one group, the mean of every episode
    assert [(g["ways"], g["episodes"]) for g in groups] == [("5-9", 20)]
    assert groups[0]["accuracy"]["ProtoMAML, 2 steps"] == pytest.approx(every_mean, abs=1e-9)
    assert (run / "plots" / "accuracy_vs_ways.png").is_file()
    assert "| mnist | ProtoMAML |" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert read_report(run).curves == report.curves


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["meta_batch_size=4"], "meta_batch_size=4: episodes=meta_dataset trains on one episode"),
        (["meta_batch_size=1", "sources=[omniglot, imagenet]"], "sources: ['imagenet'] not among"),
        (
            ["meta_batch_size=1", "sources=[mnist]", "eval_subset=val"],
            "eval_subset: ['mnist'] have",
        ),
    ],
)
def test_meta_dataset_config_mistakes_are_named(sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config("omniglot-5w1s", ["episodes=meta_dataset", *sets])


def test_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    code = main(["train", "omniglot-5w1s", "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", f"data_dir={tmp_path / 'nowhere'}", *TINY])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("metarl: error: dataset 'omniglot' not found") and "Traceback" not in err


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="n_way=6: train_classes"):
        load_config("mnist-5w1s", ["n_way=6"])
    with pytest.raises(ConfigError, match="bn_policy"):
        load_config("omniglot-5w1s", ["bn_policy=running"])
    with pytest.raises(ConfigError, match="data_dir: image_folder needs"):
        load_config("omniglot-5w1s", ["dataset=image_folder"])
    config = load_config("omniglot-20w5s")
    assert (config.n_way, config.k_shot, config.meta_batch_size, config.inner_lr,
            config.inner_steps, config.eval_steps) == (20, 5, 16, 0.1, 5, 10)  # fmt: skip
    with pytest.raises(ConfigError, match="'eval_episodes' was renamed to 'eval_tasks'"):
        load_config("omniglot-5w1s", ["eval_episodes=100"])
    # The binary images are Omniglot's: refused where no episode reads Omniglot.
    with pytest.raises(ConfigError, match=r"reads no Omniglot \(dataset: mnist\)"):
        load_config("mnist-5w1s", ["omniglot_resize=nearest", "sources=[omniglot]"])
    meta = ["episodes=meta_dataset", "meta_batch_size=1", "omniglot_resize=nearest"]
    with pytest.raises(ConfigError, match=r"\(sources: fashion-mnist, mnist\)"):
        load_config("omniglot-5w1s", [*meta, "sources=[mnist, fashion-mnist]"])
    evaluated = load_config("mnist-5w1s", [*meta, "eval_sources=[omniglot]"])
    assert evaluated.omniglot_resize == "nearest"


def test_benchmark_variants_compute_the_same_meta_gradient(one_thread):
    """Every one-thread speed-omniglot variant (chunks on workers included) against the per-task
    loop, with more tasks than a chunk so that the chunks really split. (The two-thread variants
    run the same code with another thread count; beside other processes on two cores they crawl,
    so the benchmark checks them before it times them.)"""
    _need("omniglot")
    from metarl.benchmarks.speed.omniglot import (
        CHUNK,
        SETTINGS,
        VARIANTS,
        _batches,
        meta_gradient_difference,
    )

    batch = _batches(1)[0]
    small = type(batch)(*(t[: CHUNK + 4] for t in batch))
    single = tuple(v for v in VARIANTS if v.threads == 1)
    for mode in ("second_order", "first_order"):
        assert meta_gradient_difference(small, mode, variants=single) < 1e-5
    # 20-way, 5 inner steps: the trainer's chunks on workers against the loop
    batch = _batches(1, SETTINGS["20w1s"])[0]
    small = type(batch)(*(t[: CHUNK + 1] for t in batch))
    pair = (VARIANTS[0], VARIANTS[-1])
    assert meta_gradient_difference(small, "second_order", SETTINGS["20w1s"], pair) < 1e-5


def test_image_folder_train_via_cli(tmp_path):
    from test_fewshot_data import _image_folder

    root = _image_folder(tmp_path / "mini", per_class=4)
    run = tmp_path / "run"
    code = main(["train", "miniimagenet-5w1s", "--out", str(run), "--no-progress", "--evaluate",
                 "--set", *TINY, f"data_dir={root}", "image_size=32", "n_way=2", "k_query=2",
                 "inner_steps=1"])  # fmt: skip
    assert code == 0
    assert read_report(run).protocol["classes"] == "image_folder test (2 classes)"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chunked_meta_gradient_equals_the_whole_batch_and_repeats_exactly(
    workers, algorithm, one_thread
):
    """For every algorithm, chunks of tasks weighted by their size give the whole meta-batch's
    gradient (up to float32 summation order); on worker threads the result is the same on every
    call. (The Omniglot and MNIST configs compute in chunks on two workers by default.)"""
    from metarl.algorithms import make_algorithm
    from metarl.supervised.classification_experiment import build_model, problem
    from metarl.supervised.meta_gradient import MetaGradient

    config = load_config(
        "omniglot-5w1s", ["filters=8", "meta_batch_size=7", f"algorithm={algorithm}"]
    )
    model = build_model(config)
    algorithm = make_algorithm(config, model)
    params = [*model.parameters(), *algorithm.parameters()]
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat(7, 1)
    images = [torch.rand(7, 5, 1, 28, 28, generator=gen) for _ in range(2)]
    batch = TaskBatch(images[0], labels, images[1], labels)

    def gradient(chunk_tasks: int) -> tuple[torch.Tensor, dict]:
        compute = MetaGradient(params, chunk_tasks, workers if chunk_tasks else 1)
        step = compute(algorithm, model, batch, problem(config), 0)
        compute.close()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        return torch.cat([g.reshape(-1) for g in grads]), step

    whole, whole_step = gradient(0)
    chunked, chunked_step = gradient(3)  # chunks of 3, 3 and 1 tasks
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chunked_step.loss, whole_step.loss)
    for key, value in whole_step.metrics.items():
        torch.testing.assert_close(chunked_step.metrics[key], value)
    assert torch.equal(gradient(3)[0], chunked)  # the same on every call
    with pytest.raises(ConfigError, match="chunk_workers=2 needs chunk_tasks > 0"):
        load_config("omniglot-5w1s", ["chunk_tasks=0"])
    with pytest.raises(ConfigError, match="or chunk_workers=1"):
        load_config("omniglot-5w1s", ["num_threads=2"])


def test_accuracy_by_ways_groups_episodes_over_every_source():
    """Hand-made episodes of 5, 12, 12 and 45 ways from two sources: each group's mean."""
    from metarl.supervised.classification_eval import MetaDatasetScores, accuracy_by_ways

    scores = MetaDatasetScores(
        values={"a": torch.tensor([[0.0, 0.2], [0.5, 0.4], [0.9, 0.6]]),
                "b": torch.tensor([[0.0, 0.0], [0.1, 0.3], [0.7, 0.1]])},
        probed={"prototypes": {"a": torch.tensor([[0.8, 0.6]]), "b": torch.tensor([[0.4, 0.2]])}},
        ways={"a": torch.tensor([5, 12]), "b": torch.tensor([12, 45])},
    )  # fmt: skip
    rows = accuracy_by_ways(scores, "MAML", last=2)
    assert [(r["ways"], r["episodes"]) for r in rows] == [("5-9", 1), ("10-19", 2), ("40+", 1)]
    expected = [
        {"MAML, 1 step": 0.5, "MAML, 2 steps": 0.9, "prototype head, no step": 0.8},
        {"MAML, 1 step": 0.25, "MAML, 2 steps": 0.65, "prototype head, no step": 0.5},
        {"MAML, 1 step": 0.3, "MAML, 2 steps": 0.1, "prototype head, no step": 0.2},
    ]
    for row, want in zip(rows, expected):
        assert row["accuracy"] == pytest.approx(want)


class _PlainConv4(torch.nn.Module):
    """Conv-4 (stride-2 blocks, spatial mean, linear head) written with torch.nn alone, for an
    independent check of the evaluator: BatchNorm always normalises with batch statistics
    (biased variance), of the input itself or, given ``reference``, of the reference images
    passed through the same layers (``bn_policy=support_statistics``)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        nn = torch.nn
        parts = [f"blocks.{i}.{layer}" for i in range(4) for layer in ("conv", "bn")]
        assert set(state) == {f"{p}.{w}" for p in [*parts, "head"] for w in ("weight", "bias")}
        conv = [f"blocks.{i}.conv" for i in range(4)]
        self.convs = nn.ModuleList(
            nn.Conv2d(state[f"{c}.weight"].shape[1], state[f"{c}.weight"].shape[0], 3, 2, 1)
            for c in conv
        )
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(state[f"{c}.weight"].shape[0], track_running_stats=False) for c in conv
        )
        self.head = nn.Linear(*reversed(state["head.weight"].shape))
        with torch.no_grad():
            for i in range(4):
                for ours, theirs in ((self.convs[i], "conv"), (self.bns[i], "bn")):
                    ours.weight.copy_(state[f"blocks.{i}.{theirs}.weight"])
                    ours.bias.copy_(state[f"blocks.{i}.{theirs}.bias"])
            self.head.weight.copy_(state["head.weight"])
            self.head.bias.copy_(state["head.bias"])
        self.train()  # batch statistics, whatever the mode: nothing is tracked

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns):
            x = conv(x)
            if reference is None:
                x = bn(x)
            else:
                reference = conv(reference)
                mean = reference.mean(dim=(0, 2, 3))
                var = reference.var(dim=(0, 2, 3), unbiased=False)
                x = F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
                reference = F.relu(bn(reference))
            x = F.relu(x)
        return self.head(x.mean(dim=(-2, -1)))


@pytest.mark.parametrize("bn_policy", ["transductive", "support_statistics"])
def test_evaluated_accuracy_curve_equals_plain_sgd_on_each_test_episode(tmp_path, bn_policy):
    """`metarl evaluate`'s mean query accuracy after 0, 1 and 2 steps (and its 95% interval and
    median) equals, on the same fixed test episodes, a torch.nn copy of the trained Conv-4
    fine-tuned episode by episode with `torch.optim.SGD` at inner_lr on the support set's
    cross-entropy, its BatchNorm as the bn_policy says. The episodes are adapted in chunks of
    4 and 2 by the evaluator, one at a time here."""
    _need("omniglot")
    from metarl.supervised.classification_experiment import load_split
    from metarl.supervised.data.episodes import fixed_episodes

    run = tmp_path / "run"
    assert main(["train", "omniglot-5w1s", "--out", str(run), "--no-progress",
                 "--set", *TINY, "eval_tasks=6", "eval_steps=2", "eval_chunk=4",
                 "eval_k_query=3", f"bn_policy={bn_policy}"]) == 0  # fmt: skip
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    report = read_report(run)
    curve = report.curves[0]
    assert (curve.method, curve.steps) == ("meta_learned", [0, 1, 2])
    assert report.protocol["episodes"] == 6

    config = metarl.load_run(run).config  # only for the settings; the weights are read below
    assert (config.eval_lr, config.learn_inner_lr, config.bn_policy) == (None, "fixed", bn_policy)
    alpha = config.inner_lr  # MAML's fixed step size, used at test time without eval_lr
    assert report.protocol["step_size"] == alpha == 0.4
    # The episode source is not under test: the evaluator's own sampler, from eval_seed.
    episodes = fixed_episodes(load_split(config, "test"), 6, 5, 1, 3, config.eval_seed)
    assert episodes.query_x.shape == (6, 15, 1, 28, 28)
    trained = _PlainConv4(load_checkpoint(run)["model"])

    accuracy = torch.zeros(3, 6, dtype=torch.float64)  # (step, episode)
    for task, (sx, sy, qx, qy) in enumerate(zip(*episodes)):
        net = copy.deepcopy(trained)
        sgd = torch.optim.SGD(net.parameters(), lr=alpha)
        for step in range(3):
            with torch.no_grad():
                logits = net(qx, sx if bn_policy == "support_statistics" else None)
            accuracy[step, task] = (logits.argmax(dim=1) == qy).double().mean()
            if step < 2:
                sgd.zero_grad()
                F.cross_entropy(net(sx), sy).backward()
                sgd.step()

    # ~1e-6: the evaluator's per-episode accuracies are float32; one query more or less right
    # in one episode moves a mean by 1/90.
    assert curve.mean == pytest.approx(accuracy.mean(dim=1).tolist(), abs=1e-6)
    ci95 = 1.96 * accuracy.std(dim=1) / math.sqrt(6)  # ddof 1
    assert curve.error == pytest.approx(ci95.tolist(), abs=1e-6)
    assert curve.median == pytest.approx(accuracy.quantile(0.5, dim=1).tolist(), abs=1e-6)
    # The check has teeth: adapting changes the episodes' accuracies.
    assert not torch.equal(accuracy[0], accuracy[2])
