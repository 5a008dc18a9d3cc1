"""`metarl analyze` and its measures, against independent computations.

Gradient alignment against a per-task loop written out by hand; CKA against its invariances;
frozen BatchNorm against the module it replaces; the probes on features whose answer is known;
and one small end-to-end comparison of a meta-learned and a standard run on real MNIST (skipped
without the data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarl.analysis.models import freeze_batchnorm
from metarl.analysis.numbers import (
    linear_cka,
    nearest_centroid_accuracy,
    relative_change,
)
from metarl.core.alignment import gradient_alignment, per_task_gradients
from metarl.core.functional import task_forward
from metarl.supervised.models import bn_mlp


# --- gradient alignment -----------------------------------------------------------------------
def _per_task_loop(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Each task's gradient on its own, with the module's own forward and autograd."""
    rows = []
    for x, y in zip(xs, ys):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(rows)


def test_per_task_gradients_equal_a_loop_over_tasks() -> None:
    torch.manual_seed(0)
    model = bn_mlp(12, [8, 6], 3)
    xs, ys = torch.randn(5, 9, 1, 3, 4), torch.randint(0, 3, (5, 9))
    params = dict(model.named_parameters())

    def losses(p):  # noqa: ANN001, ANN202
        logits = task_forward(model, p, xs)
        return torch.stack([F.cross_entropy(logits[i], ys[i]) for i in range(5)])

    batched = per_task_gradients(losses, params, 5)
    torch.testing.assert_close(batched, _per_task_loop(model, xs, ys), rtol=1e-5, atol=1e-6)


def test_alignment_numbers_equal_the_definitions() -> None:
    torch.manual_seed(1)
    support, query = torch.randn(4, 30), torch.randn(4, 30)
    result = gradient_alignment(support, query)
    inner = [[float(support[i] @ query[j]) for j in range(4)] for i in range(4)]
    cos = [
        [float(F.cosine_similarity(support[i], query[j], dim=0)) for j in range(4)]
        for i in range(4)
    ]
    off = [(i, j) for i in range(4) for j in range(4) if i != j]
    assert result.same_task_inner == pytest.approx(sum(inner[i][i] for i in range(4)) / 4, rel=1e-6)
    assert result.across_task_inner == pytest.approx(
        sum(inner[i][j] for i, j in off) / 12, rel=1e-6
    )
    assert result.same_task_cosine == pytest.approx(sum(cos[i][i] for i in range(4)) / 4, abs=1e-6)
    assert result.across_task_cosine == pytest.approx(sum(cos[i][j] for i, j in off) / 12, abs=1e-6)
    assert result.cosine.shape == (8, 8)
    torch.testing.assert_close(result.cosine.diagonal(), torch.ones(8))
    assert float(result.cosine[1, 4 + 2]) == pytest.approx(cos[1][2], abs=1e-6)


def test_alignment_refuses_mismatched_gradients() -> None:
    with pytest.raises(ValueError, match="same T >= 2 tasks"):
        gradient_alignment(torch.randn(3, 5), torch.randn(2, 5))


def test_training_logs_alignment(tmp_path: Path) -> None:
    from metarl.cli import main

    assert main(["train", "sinusoid", "--out", str(tmp_path / "run"), "--no-progress", "--set",
                 "iterations=20", "log_every=10", "align_every=10", "checkpoint_every=20",
                 "tensorboard=false"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1 <= line["align/same_task_cosine"] <= 1 for line in lines)
    assert all("align/across_task_inner" in line for line in lines)


def test_a_meta_batch_of_one_task_trains_without_alignment(tmp_path: Path) -> None:
    """Alignment compares tasks with each other; one task per meta-iteration (Meta-Dataset's
    episodes) has none to compare, and training goes on past ``align_every`` without it."""
    from metarl.cli import main

    assert main(["train", "sinusoid", "--out", str(tmp_path / "run"), "--no-progress", "--set",
                 "iterations=20", "log_every=10", "align_every=10", "checkpoint_every=20",
                 "meta_batch_size=1", "tensorboard=false"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [10, 20]
    assert not any(key.startswith("align/") for line in lines for key in line)


def test_align_every_must_meet_the_log() -> None:
    from metarl.config import ConfigError
    from metarl.experiments import load_config

    with pytest.raises(ConfigError, match="align_every .* multiple of log_every"):
        load_config("sinusoid", {"align_every": 150, "log_every": 100})


# --- CKA, probes, frozen BatchNorm --------------------------------------------------------------
def test_linear_cka_is_one_for_a_representation_with_itself_and_its_rotations() -> None:
    torch.manual_seed(2)
    x = torch.randn(200, 10)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(200, 10)) < 0.2
    # The kernel form (Kornblith et al. 2019, Eq. 3): HSIC(K, L) = tr(K H L H) / (n − 1)² on
    # Gram matrices K = X Xᵀ, L = Y Yᵀ with the centring H = I − 11ᵀ/n, normalised.
    import numpy as np

    a, b = np.random.default_rng(0).normal(size=(2, 30, 4)) @ np.diag([3.0, 1.0, 0.5, 0.1])
    b = b + 0.7 * a[:, ::-1]  # partly related
    h = np.eye(30) - 1.0 / 30

    def hsic(k: np.ndarray, m: np.ndarray) -> float:
        return float(np.trace(k @ h @ m @ h)) / 29**2

    gram_a, gram_b = a @ a.T, b @ b.T
    expected = hsic(gram_a, gram_b) / np.sqrt(hsic(gram_a, gram_a) * hsic(gram_b, gram_b))
    assert 0.1 < expected < 0.9
    assert linear_cka(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-9)


def test_nearest_centroid_finds_separated_classes_and_guesses_on_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(40)
    separated = torch.nn.functional.one_hot(labels).float() * 10 + 0.1 * torch.randn(200, 5)
    assert nearest_centroid_accuracy(separated, labels, 5, 1, 5, 50, generator).mean == 1.0
    noise = torch.randn(200, 5)
    chance = nearest_centroid_accuracy(noise, labels, 5, 1, 5, 300, generator)
    assert abs(chance.mean - 0.2) < 3 * chance.ci95 + 0.03


def test_relative_change_per_tensor() -> None:
    before = {"w": torch.ones(2, 2)}
    after = {"w": torch.stack([torch.ones(2, 2), 2 * torch.ones(2, 2)])}  # tasks: no change, +100%
    assert relative_change(before, after) == {"w": pytest.approx(0.5)}


def test_frozen_batchnorm_reproduces_each_convention() -> None:
    torch.manual_seed(3)
    reference = torch.randn(64, 1, 4, 4)
    per_batch = bn_mlp(16, [8, 6], 3)  # MAML's: every batch by its own statistics
    frozen = freeze_batchnorm(per_batch, reference)
    torch.testing.assert_close(frozen(reference), per_batch(reference), rtol=1e-5, atol=1e-5)
    one = reference[:1]
    assert torch.isfinite(frozen(one)).all()  # one image at a time, now
    running = bn_mlp(16, [8, 6], 3, running_statistics=True)
    running.train()
    for _ in range(3):
        running(torch.randn(32, 1, 4, 4))
    running.eval()
    torch.testing.assert_close(freeze_batchnorm(running, reference)(one), running(one))


def test_conv4_as_plain_layers_computes_what_conv4_computes() -> None:
    """The analysis's Sequential Conv-4 (the standard classifier's network) against the
    meta-learned Conv4: the same outputs from the same weights, also at adapted parameters
    renamed onto it, and its frozen BatchNorm reproducing batch statistics on the reference."""
    from metarl.analysis.models import as_sequential
    from metarl.core.functional import single_forward
    from metarl.supervised.conv4 import Conv4

    torch.manual_seed(0)
    conv4 = Conv4(5)
    sequential, rename = as_sequential(conv4)
    x = torch.rand(12, 1, 28, 28)
    torch.testing.assert_close(sequential(x), conv4(x), rtol=0, atol=0)
    moved = {n: p.detach() + 0.05 * torch.randn_like(p) for n, p in conv4.named_parameters()}
    torch.testing.assert_close(
        single_forward(sequential, {rename(n): p for n, p in moved.items()}, x),
        single_forward(conv4, moved, x),
        rtol=1e-6,
        atol=1e-6,
    )
    frozen = freeze_batchnorm(sequential, x)
    torch.testing.assert_close(frozen(x), conv4(x), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(frozen(x[:1])).all()
    running = as_sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))[0]
    for _ in range(3):
        running(torch.randn(8, 1, 6, 6))
    running.eval()
    one = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(freeze_batchnorm(running, x)(one), running(one))


# --- end to end on MNIST ------------------------------------------------------------------------
def _available(dataset: str) -> bool:
    from metarl.supervised.data.files import DataError, dataset_dir

    try:
        dataset_dir(None, dataset)
    except DataError:
        return False
    return True


def _train_both_and_analyze(
    tmp_path: Path, meta: list[str], standard: list[str], analyze: list[str], figures: list[str]
) -> dict:
    """Train a meta-learned and a standard run (``[experiment, KEY=VALUE...]`` each), analyse
    them side by side, check every figure was drawn, and return ``numbers.json``."""
    from metarl.cli import main

    runs = {"maml": meta, "standard": standard}
    for name, (experiment, *sets) in runs.items():
        args = ["train", experiment, "--out", str(tmp_path / name), "--no-progress", "--set"]
        assert main([*args, *sets, "tensorboard=false"]) == 0, name
    out = tmp_path / "analysis"
    assert main(["analyze", str(tmp_path / "maml"), "--compare", str(tmp_path / "standard"),
                 "--out", str(out), *analyze, "--no-progress"]) == 0  # fmt: skip
    for figure in ("filters", "embeddings", "activating_maml", "activating_standard", "saliency",
                   "activation_max", "gradient_cosines", *figures):  # fmt: skip
        assert (out / f"{figure}.png").stat().st_size > 3000, figure
    return json.loads((out / "numbers.json").read_text())


@pytest.mark.skipif(not _available("mnist"), reason="MNIST is not on this machine")
@pytest.mark.timeout(300)
def test_an_ordinary_training_run_is_evaluated_finished_or_not(tmp_path, capsys):
    """Ordinary training counts its budget in epochs: a finished run evaluates, and one short
    of its budget says so in epochs."""
    from metarl.cli import main
    from metarl.run import CHECKPOINT

    run = tmp_path / "standard"
    assert main(["train", "standard-mnist", "--out", str(run), "--no-progress",
                 "--set", "epochs=1", "tensorboard=false"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "not finished" not in capsys.readouterr().out
    state = torch.load(run / CHECKPOINT, weights_only=True)
    state["config"]["epochs"] = 3  # as a run stopped after its first of three epochs would say
    torch.save(state, run / CHECKPOINT)
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    caption = capsys.readouterr().out.splitlines()[0]
    assert caption.endswith("(the run is not finished: 1 of 3 epochs)"), caption


@pytest.mark.skipif(not _available("mnist"), reason="MNIST is not on this machine")
@pytest.mark.timeout(900)
def test_analyze_a_meta_learned_and_a_standard_run(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    pytest.importorskip("sklearn")
    from metarl.cli import main

    numbers = _train_both_and_analyze(
        tmp_path,
        ["mnist-mlp-5w1s", "iterations=60", "log_every=20", "align_every=20",
         "checkpoint_every=60"],
        ["standard-mnist", "epochs=1"],
        ["--points", "300", "--episodes", "40", "--tasks", "4"],
        ["alignment_training"],
    )  # fmt: skip
    standard, out = tmp_path / "standard", tmp_path / "analysis"
    assert numbers["held_out_classes"] == [5, 6, 7, 8, 9]
    chance = 1 / 5
    for key, accuracy in numbers["linear_probe"].items():
        assert accuracy > chance + 0.2, key  # even random features separate digits linearly
    centroid = {k: v["5-way 1-shot"]["mean"] for k, v in numbers["nearest_centroid"].items()}
    assert centroid["standard (trained)"] > 0.6
    assert centroid["standard (trained)"] > centroid["standard (initial)"] + 0.05  # it learnt
    for run in ("standard", "MAML"):
        assert -1 <= numbers["silhouette"][run]["features"] <= 1, run
    assert set(numbers["cka"]["MAML vs standard"]) >= {"hidden1", "norm4", "hidden4"}
    assert all(0 <= v <= 1 + 1e-9 for v in numbers["cka"]["MAML vs standard"].values())
    assert numbers["adaptation_change"]["MAML"]["linear5.weight"] > 0
    report = (out / "report.md").read_text()
    assert "![embeddings](embeddings.png)" in report and "| MAML vs standard |" in report

    # From Python the standard run predicts, and says plainly that it does not adapt.
    import metarl

    loaded = metarl.load_run(standard)
    assert loaded.algorithm is None and loaded.iteration == 1  # its epoch
    images = torch.zeros(3, 1, 28, 28)
    assert loaded.predict(images).shape == (3, loaded.config.n_classes)
    for adapting in (lambda: loaded.adapt(images, torch.zeros(3, dtype=torch.long)),
                     lambda: loaded.adapt_policy({"goal": [0.1, 0.1]})):  # fmt: skip
        with pytest.raises(metarl.ConfigError, match="ordinary training, nothing adapts"):
            adapting()

    # A unit the network does not have is refused before any work (the folder is not made).
    wide = tmp_path / "too-wide"
    assert main(["analyze", str(standard), "--out", str(wide), "--units", "0", "5000",
                 "--no-progress"]) == 2  # fmt: skip
    assert not wide.exists()
    shallow = tmp_path / "shallow"  # two hidden layers: no third and fourth BatchNorm to show
    assert main(["train", "mnist-mlp-5w1s", "--out", str(shallow), "--no-progress", "--set",
                 "iterations=2", "log_every=2", "checkpoint_every=2", "mlp_hidden=[16,16]",
                 "tensorboard=false"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["analyze", str(shallow), "--out", str(wide), "--no-progress"]) == 2
    assert "its network has 2 BatchNorm layers" in capsys.readouterr().err
    assert not wide.exists()

    # A run compared with itself: every layer's CKA is 1.
    again = tmp_path / "again"
    assert main(["analyze", str(standard), "--compare", str(standard), "--out", str(again),
                 "--points", "200", "--episodes", "10", "--tasks", "2",
                 "--no-progress"]) == 0  # fmt: skip
    numbers = json.loads((again / "numbers.json").read_text())
    self_cka = numbers["cka"]["standard vs standard (2)"]
    assert all(math.isclose(v, 1.0, abs_tol=1e-6) for v in self_cka.values())


@pytest.mark.skipif(not _available("omniglot"), reason="Omniglot is not on this machine")
@pytest.mark.timeout(900)
def test_analyze_a_meta_learned_and_a_standard_conv4_on_omniglot(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sklearn")
    numbers = _train_both_and_analyze(
        tmp_path,
        ["omniglot-5w1s", "iterations=20", "meta_batch_size=4", "log_every=10",
         "checkpoint_every=20"],
        ["standard-omniglot", "epochs=1"],
        ["--points", "300", "--episodes", "20", "--tasks", "3"],
        [],
    )  # fmt: skip
    out = tmp_path / "analysis"
    from metarl.analysis.data import trained_classes
    from metarl.experiments import load_config

    trained = set(trained_classes(load_config("omniglot-5w1s")))
    held_out = set(numbers["held_out_classes"])
    assert (
        len(trained) == 1100 and not held_out & trained and held_out | trained == set(range(1623))
    )
    assert numbers["probed_classes"] == 100
    layers = ["norm1", "hidden1", "norm2", "hidden2", "norm3", "hidden3", "norm4", "hidden4"]
    assert list(numbers["cka"]["MAML vs standard"]) == layers
    assert {"conv1.weight", "norm4.bias", "head.weight"} <= set(
        numbers["adaptation_change"]["MAML"]
    )
    assert numbers["adaptation_change"]["MAML"]["head.weight"] > 0
    assert numbers["nearest_centroid"]["MAML (trained)"]["5-way 1-shot"]["mean"] > 0.3  # chance 0.2
    # A run that saw the binary images is not compared with one that saw the antialiased ones.
    import shutil

    from metarl.cli import main
    from metarl.run import CHECKPOINT

    binary = tmp_path / "maml-binary"
    shutil.copytree(tmp_path / "maml", binary)
    state = torch.load(binary / CHECKPOINT, weights_only=True)
    state["config"]["omniglot_resize"] = "nearest"
    torch.save(state, binary / CHECKPOINT)
    capsys.readouterr()
    assert main(["analyze", str(binary), "--compare", str(tmp_path / "standard"), "--out",
                 str(tmp_path / "mixed"), "--no-progress"]) == 2  # fmt: skip
    assert "omniglot_resize=nearest" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()
    report = (out / "report.md").read_text()
    assert "3×3 convolution kernels" in report and "| MAML vs standard |" in report


def test_standard_omniglot_needs_the_training_characters_and_conv4() -> None:
    from metarl.config import ConfigError
    from metarl.experiments import load_config

    assert load_config("standard-omniglot").n_classes == 1100
    with pytest.raises(ConfigError, match="classes=train network=conv4"):
        load_config("standard-omniglot", {"network": "mlp"})


def test_analyze_refuses_a_run_it_cannot_read_in_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from metarl.cli import main

    assert main(["train", "sinusoid", "--out", str(tmp_path / "run"), "--no-progress", "--set",
                 "iterations=10", "log_every=10", "checkpoint_every=10"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "a")]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("metarl: error:") and "\n" not in error
    analyze = ["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "a")]
    for flags, message in (
        (["--points", "10"], "--points 10: give at least 40"),
        (["--episodes", "1"], "--episodes 1: give at least 2"),
        (["--units", "3", "-1"], "--units -1: unit indices start at 0"),
    ):
        assert main([*analyze, *flags]) == 2
        assert message in capsys.readouterr().err


def test_silhouette_against_the_definition_by_hand():
    """Two tight pairs far apart: each point's a = 1 and b = its mean distance to the other
    pair, s = (b − a) / b; pairing across the gap instead gives negative silhouettes."""
    pytest.importorskip("sklearn")
    from metarl.analysis.numbers import silhouette

    points = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    expected = (2 * (10.5 - 1) / 10.5 + 2 * (9.5 - 1) / 9.5) / 4
    assert silhouette(points, torch.tensor([0, 0, 1, 1])) == pytest.approx(expected)
    # point 0: a = 10 (to 10), b = mean(1, 11) = 6, s = (6 − 10) / 10; the others alike
    crossed = ((6 - 10) / 10 + (5 - 10) / 10 + (5 - 10) / 10 + (6 - 10) / 10) / 4
    assert silhouette(points, torch.tensor([0, 1, 0, 1])) == pytest.approx(crossed)
