"""Every locomotion experiment trains, evaluates and resumes through the CLI (tiny settings)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from metarl.cli import main
from metarl.experiments import load_config
from metarl.reports import read_report

TINY = [
    "iterations=2",
    "meta_batch_size=2",
    "episodes_per_task=2",
    "horizon=8",
    "eval_tasks=2",
    "eval_episodes_per_task=2",
    "eval_steps=1",
    "tensorboard=false",
    "checkpoint_every=1",
]


@pytest.mark.parametrize(
    "experiment", ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"]
)
def test_locomotion_experiment_end_to_end(tmp_path, experiment):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", experiment, "--out", str(tmp_path / "run"), "--no-progress",
                     "--evaluate", "--set", *TINY])  # fmt: skip
    assert code == 0
    report = read_report(tmp_path / "run")
    assert {"meta_learned", "random_init"} <= {c.method for c in report.curves}
    values = report.curve("meta_learned").mean
    assert len(values) == 2 and all(math.isfinite(v) for v in values)


def test_locomotion_configs_follow_the_reference():
    for name in ("halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"):
        c = load_config(name)
        assert (c.meta_batch_size, c.episodes_per_task, c.inner_lr, c.max_kl) == (40, 20, 0.1, 0.01)
        assert (c.gamma, c.gae_lambda, c.iterations, c.horizon) == (0.99, 1.0, 500, 100)


def test_locomotion_resume_is_exact(tmp_path):
    """Reset noise is reseeded per iteration, so a resumed run equals an uninterrupted one."""

    def model(run: str) -> dict:
        state = torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)
        return {"iteration": state["iteration"], **state["model"]}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "halfcheetah-vel", "--out", str(tmp_path / "a"), "--no-progress",
                     "--set", *TINY]) == 0  # fmt: skip
        assert main(["train", "halfcheetah-vel", "--out", str(tmp_path / "b"), "--no-progress",
                     "--set", *TINY, "iterations=1"]) == 0  # fmt: skip
        first = model("b")
        assert main(["train", "halfcheetah-vel", "--resume", str(tmp_path / "b"), "--no-progress",
                     "--set", "iterations=2"]) == 0  # fmt: skip
    a, b = model("a"), model("b")
    assert a["iteration"] == b["iteration"] == 2 and first["iteration"] == 1
    for name in a.keys() - {"iteration"}:
        assert torch.equal(a[name], b[name]), name
    assert any(not torch.equal(first[k], b[k]) for k in b if k != "iteration")  # it trained
