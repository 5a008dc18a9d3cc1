"""Sinusoid tasks and the test-time adaptation curve, against direct computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from metarl.algorithms import Problem
from metarl.algorithms.maml import MAML
from metarl.core import InnerStepSize, TaskBatch
from metarl.reports import Curve
from metarl.supervised.adaptation import adaptation_curve
from metarl.supervised.models import sinusoid_mlp
from metarl.supervised.sinusoid import SinusoidTasks, oracle_inputs
from metarl.supervised.tasks import mse_per_task


def test_tasks_follow_the_paper_distribution():
    tasks = SinusoidTasks()
    batch, params = tasks.sample(2000, 10, 7, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2000, 10, 1) and batch.query_y.shape == (2000, 7, 1)
    assert 0.1 <= params.amplitude.min() and params.amplitude.max() <= 5.0
    assert 0.0 <= params.phase.min() and params.phase.max() <= math.pi
    assert -5.0 <= batch.support_x.min() and batch.support_x.max() <= 5.0
    # y = A sin(x - φ), checked point by point with math.sin
    a, p, x = params.amplitude[3].item(), params.phase[3].item(), batch.query_x[3, 2, 0].item()
    assert abs(batch.query_y[3, 2, 0].item() - a * math.sin(x - p)) < 1e-5
    assert abs(params.amplitude.mean().item() - 2.55) < 0.1  # U[0.1, 5] has mean 2.55


def test_same_generator_seed_same_tasks():
    t = SinusoidTasks()
    a, _ = t.sample(3, 4, 4, torch.Generator().manual_seed(7))
    b, _ = t.sample(3, 4, 4, torch.Generator().manual_seed(7))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_oracle_inputs_append_amplitude_and_phase():
    batch, params = SinusoidTasks().sample(2, 3, 3, torch.Generator().manual_seed(0))
    inputs = oracle_inputs(batch.support_x, params)
    assert inputs.shape == (2, 3, 3)
    assert torch.equal(inputs[1, :, 1], params.amplitude[1].expand(3))
    assert torch.equal(inputs[0, :, 2], params.phase[0].expand(3))


def test_adaptation_curve_equals_plain_sgd_on_each_task():
    torch.manual_seed(0)
    model = sinusoid_mlp([16, 16])
    batch, _ = SinusoidTasks().sample(3, 10, 20, torch.Generator().manual_seed(1))
    maml = MAML(InnerStepSize(0.05))  # the explicit test-time step size below wins over its own
    curve = adaptation_curve(maml, model, batch, Problem(mse_per_task), 4, 0.01, chunk_size=2)
    assert curve.shape == (5, 3)
    for i in range(3):  # independent reference: a copied module and torch.optim.SGD
        net = copy.deepcopy(model)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        for s in range(5):
            with torch.no_grad():
                q = ((net(batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
            torch.testing.assert_close(curve[s, i], q, rtol=1e-5, atol=1e-6)
            opt.zero_grad()
            ((net(batch.support_x[i]) - batch.support_y[i]) ** 2).mean().backward()
            opt.step()
    assert all(p.grad is None for p in model.parameters()), "the model must not be modified"


def test_with_shots_and_ci():
    batch = TaskBatch(*(torch.randn(4, 20, 1) for _ in range(4)))
    assert batch.with_shots(5).support_x.shape == (4, 5, 1)
    values = torch.tensor([[1.0, 3.0, 5.0, 7.0]])
    ci = Curve.from_samples("m", "m", values, "ci95")
    assert ci.mean == [4.0] and ci.steps == [0]
    assert abs(ci.error[0] - 1.96 * math.sqrt(20 / 3) / 2) < 1e-9
    stderr = Curve.from_samples("m", "m", values, "stderr")
    assert abs(stderr.error[0] - math.sqrt(20 / 3) / 2) < 1e-9


def test_diverging_tasks_are_counted_and_flagged_beside_the_median():
    from metarl.reports import EvalReport, Headline, ModelChoice
    from metarl.results_table import results_table

    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5, 80.0], [0.2, float("inf"), 1, 2]])
    curve = Curve.from_samples("meta_learned", "MAML", losses, "ci95", count_growth=True)
    assert curve.grew == [0, 1, 1]  # task 4 grew 20x at step 1; task 2 blew up at step 2
    assert curve.median == pytest.approx([2.5, 1.25, 1.5])
    report = EvalReport("sinusoid", "sinusoid", "MSE", False, "ci95", [curve],
                        Headline("MSE", "meta_learned", 1), ModelChoice("last", 1, 1), {}, 0.0,
                        {}, decimals=2)  # fmt: skip
    table = results_table(report)
    assert "‡" in table.splitlines()[2]
    assert "MAML after 1 steps: 1 of the test tasks' losses grew more than 10x" in table
    assert "the median is 1.25" in table


def test_a_task_whose_loss_overflowed_to_nan_leaves_the_median_defined():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, float("nan"), 0.7, 0.2, 0.1]])
    curve = Curve.from_samples("meta_learned", "MAML", losses, "ci95", count_growth=True)
    assert curve.grew == [0, 1]
    assert math.isnan(curve.mean[1])  # the mean is honest about it; the flag and median explain
    # NaN ranked as +inf: [0.1, 0.2, 0.5, 0.7, inf]
    assert curve.median == pytest.approx([3.0, 0.5])


def test_test_time_steps_are_alpha_then_half_alpha_unless_set_or_learned():
    from metarl.algorithms import make_algorithm
    from metarl.experiments import load_config
    from metarl.supervised.sinusoid_eval import test_step_sizes
    from metarl.supervised.sinusoid_experiment import build_model

    def step_sizes(**overrides):
        config = load_config("sinusoid", overrides)
        return test_step_sizes(config, make_algorithm(config, build_model(config)))

    assert step_sizes() == [0.01, 0.005]
    assert step_sizes(inner_lr=0.001) == [0.001, 0.0005]
    assert step_sizes(eval_lr=0.01) == 0.01  # the paper text's fixed step
    assert step_sizes(algorithm="meta_sgd") is None  # its meta-learned step sizes, as learned


def test_stored_baselines_are_reused_until_their_settings_change_or_a_retrain(tmp_path):
    """The pretrained model and the oracle are trained once and read back while the settings
    their training reads stay the same (another test-task seed is not one); --retrain-baselines
    trains them again, from the same seed to the same weights, and so does a changed
    learning rate, to other weights."""
    from dataclasses import replace

    from metarl.experiments import load_config
    from metarl.run import atomic_torch_save
    from metarl.supervised.sinusoid_eval import BASELINES, baselines

    config = load_config("sinusoid", {"baseline_iterations": 5, "meta_batch_size": 4})
    trained, _ = baselines(config, tmp_path, progress=False)
    stored = torch.load(tmp_path / BASELINES, weights_only=True)
    altered = {k: v + 1.0 for k, v in stored["pretrained"].items()}  # a cache we can recognise
    atomic_torch_save({**stored, "pretrained": altered}, tmp_path / BASELINES)

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    for settings in (config, replace(config, eval_seed=config.eval_seed + 1)):
        reused, _ = baselines(settings, tmp_path, progress=False)
        assert same(reused.state_dict(), altered)
    older = {**stored["key"], "eval_seed": 7, "eval_steps": 10}  # a file's key held these too
    atomic_torch_save({**stored, "key": older, "pretrained": altered}, tmp_path / BASELINES)
    reused, _ = baselines(config, tmp_path, progress=False)
    assert same(reused.state_dict(), altered)
    retrained, _ = baselines(config, tmp_path, retrain=True, progress=False)
    assert same(retrained.state_dict(), trained.state_dict())
    atomic_torch_save({**stored, "pretrained": altered}, tmp_path / BASELINES)
    other_lr, _ = baselines(replace(config, baseline_lr=0.01), tmp_path, progress=False)
    assert not same(other_lr.state_dict(), altered)
    assert not same(other_lr.state_dict(), trained.state_dict())
