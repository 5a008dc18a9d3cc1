"""``metarl evaluate`` for sinusoid regression: the paper's comparison of MAML with baselines.

Protocol (defaults in :class:`~metarl.supervised.config.SinusoidConfig`): ``eval_tasks`` fixed
test sinusoids drawn from ``eval_seed``; for every K in ``eval_shots`` the first K of the task's
support points are used to take ``eval_steps`` gradient steps (:func:`test_step_sizes`: α for
the first step and α/2 after it, or ``eval_lr``), and the MSE on ``eval_query_points`` query
points is recorded after every step.
Methods: the meta-trained model, **pretrained** (fine-tuned the same way, its step size chosen
on separate validation tasks), **oracle** (given A and φ; no adaptation). Error bars: 95%
confidence intervals of the mean over test tasks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.algorithms import LABELS, MetaAlgorithm
from metarl.algorithms.maml import MAML
from metarl.config import to_dict
from metarl.core import InnerStepSize, TaskBatch, task_forward
from metarl.plots import adaptation_curves, learning_curve, new_figure, save
from metarl.reports import Curve, EvalReport, Headline, ModelChoice, write_report
from metarl.run import (
    RunError,
    atomic_torch_save,
    load_checkpoint,
    load_tensors,
    load_weights,
    read_metrics,
)
from metarl.runtime import set_num_threads
from metarl.supervised.adaptation import adaptation_curve, step_size_used
from metarl.supervised.checkpoint import restore
from metarl.supervised.config import SinusoidConfig
from metarl.supervised.models import sinusoid_mlp
from metarl.supervised.sinusoid import SinusoidTaskParams, oracle_inputs
from metarl.supervised.sinusoid_experiment import (
    PROBLEM,
    build_model,
    task_distribution,
    train_regressor,
)
from metarl.supervised.tasks import mse_per_task

BASELINES = "baselines.pt"
VALIDATION_TASKS = 200


def fixed_tasks(
    config: SinusoidConfig, n_tasks: int, seed: int
) -> tuple[TaskBatch, SinusoidTaskParams]:
    """Seeded test (or validation) tasks with ``max(eval_shots)`` support points each."""
    tasks = task_distribution(config)
    gen = torch.Generator().manual_seed(seed)
    return tasks.sample(n_tasks, max(config.eval_shots), config.eval_query_points, gen)


def test_step_sizes(config: SinusoidConfig, algorithm: MetaAlgorithm) -> float | list[float] | None:
    """The step sizes of the test-time steps: ``eval_lr`` when given; for a fixed step size α,
    α for the first step (the one meta-trained) and α/2 for the later ones; meta-learned step
    sizes (None) as learned.

    Why not α throughout, as the paper's text reads: MAML meta-learns θ where α times the largest
    eigenvalue of a K = 5 support loss's Hessian is about 2.5 (measured for α = 0.01 and for
    α = 0.001 alike), the edge of stability of gradient descent. The first step leaves that
    region, but repeated steps of size α oscillate, and on some seeds a few of the 600 test tasks
    diverge to inf (docs/experiments/sinusoid.md). Halving the later steps, as the MAML code's
    meta-RL evaluation does, keeps every K's curve monotone with the same 10-step error.
    ``eval_lr: 0.01`` restores the fixed step.
    """
    if config.eval_lr is not None:
        return config.eval_lr
    if any(True for _ in algorithm.parameters()):
        return None
    return [config.inner_lr, config.inner_lr / 2]


def _baseline_key(config: SinusoidConfig) -> dict[str, Any]:
    """The config fields the baselines' training reads (a change retrains them; the
    evaluation's own settings do not)."""
    fields = (
        "seed", "amplitude_range", "phase_range", "input_range", "k_shot", "k_query",
        "hidden_sizes", "activation", "init", "meta_batch_size", "baseline_iterations",
        "baseline_lr",
    )  # fmt: skip
    return {f: getattr(config, f) for f in fields}


def _trained_alike(stored: Any, key: dict[str, Any]) -> bool:
    """Whether stored baselines were trained with ``key``'s settings (files from before the
    key was narrowed also hold evaluation settings, which do not matter)."""
    return isinstance(stored, dict) and all(stored.get(f) == v for f, v in key.items())


def baselines(
    config: SinusoidConfig, run_dir: Path, retrain: bool = False, progress: bool = True
) -> tuple[nn.Module, nn.Module]:
    """The pretrained model and the oracle.

    Trained on first use and stored in ``run_dir/baselines.pt``; reused while the settings
    their training reads are unchanged (an evaluation at other test settings reuses them).
    """
    path = run_dir / BASELINES
    pretrained = sinusoid_mlp(config.hidden_sizes, config.activation)
    oracle = sinusoid_mlp(config.hidden_sizes, config.activation, inputs=3)
    if path.exists() and not retrain:
        state = load_tensors(path, "baselines file")
        if isinstance(state, dict) and _trained_alike(state.get("key"), _baseline_key(config)):
            try:
                load_weights(pretrained, state.get("pretrained"), path)
                load_weights(oracle, state.get("oracle"), path)
                return pretrained, oracle
            except RunError as e:  # a damaged cache of models we can train again
                print(f"metarl: {e}; training the baselines again", file=sys.stderr)
    pretrained = train_regressor(config, oracle=False, progress=progress, desc="pretrained").cpu()
    oracle = train_regressor(config, oracle=True, progress=progress, desc="oracle").cpu()
    state = {
        "key": _baseline_key(config),
        "pretrained": pretrained.state_dict(),
        "oracle": oracle.state_dict(),
    }
    atomic_torch_save(state, path)
    return pretrained, oracle


def finetuning(step_size: float) -> MAML:
    """Plain fine-tuning with gradient steps of size ``step_size`` (a model never meta-trained
    adapts like MAML at test time)."""
    return MAML(InnerStepSize(step_size))


def tune_finetune_lr(
    config: SinusoidConfig, model: nn.Module, k: int
) -> tuple[float, dict[float, float]]:
    """The paper fine-tunes the pretrained model "using an automatically tuned step size".

    For support size ``k``, each candidate of ``pretrained_finetune_lrs`` fine-tunes the model
    on ``VALIDATION_TASKS`` separate tasks (seed ``eval_seed + 1``); the one with the lowest
    mean query MSE over steps 1..S wins. A step size that diverges on any task scores inf.
    """
    val, _ = fixed_tasks(config, VALIDATION_TASKS, config.eval_seed + 1)
    val = val.with_shots(k)
    scores = {}
    for lr in config.pretrained_finetune_lrs:
        curve = adaptation_curve(finetuning(lr), model, val, PROBLEM, config.eval_steps)[1:]
        scores[lr] = curve.mean().item() if torch.isfinite(curve).all() else float("inf")
    return min(scores, key=scores.__getitem__), scores


def evaluate(
    config: SinusoidConfig, run_dir: Path, retrain_baselines: bool = False, progress: bool = True
) -> EvalReport:
    """Run the protocol on the run's model, write ``eval.json`` and the plots."""
    started = time.time()
    set_num_threads(config.num_threads)
    state = load_checkpoint(run_dir)
    model, algorithm = restore(config, state, build_model(config))
    pretrained, oracle = baselines(config, run_dir, retrain_baselines, progress)
    test, task_params = fixed_tasks(config, config.eval_tasks, config.eval_seed)
    with torch.no_grad():
        oracle_mse = mse_per_task(oracle(oracle_inputs(test.query_x, task_params)), test.query_y)

    curves: list[Curve] = []
    finetune_lrs: dict[str, float] = {}
    meta_step_sizes = test_step_sizes(config, algorithm)
    for k in config.eval_shots:
        shots, setting = test.with_shots(k), f"K={k}"
        finetune_lr, _ = tune_finetune_lr(config, pretrained, k)
        finetune_lrs[setting] = finetune_lr
        for method, label, net, adapter, step_sizes in (
            ("meta_learned", LABELS[config.algorithm], model, algorithm, meta_step_sizes),
            ("pretrained", "pretrained", pretrained, finetuning(finetune_lr), None),
        ):
            values = adaptation_curve(adapter, net, shots, PROBLEM, config.eval_steps, step_sizes)
            curves.append(Curve.from_samples(method, label, values, "ci95", setting=setting,
                                             count_growth=True))  # fmt: skip
        curves.append(
            Curve.from_samples("oracle", "oracle", oracle_mse.unsqueeze(0), "ci95", [0], setting)
        )

    headline_k = 10 if 10 in config.eval_shots else config.eval_shots[0]
    report = EvalReport(
        experiment=config.experiment,
        family="sinusoid",
        metric="mean squared error on the query points",
        higher_is_better=False,
        error_bar="ci95",
        curves=curves,
        headline=Headline(
            f"MSE, K={headline_k}, 1 step",
            "meta_learned",
            min(1, config.eval_steps),
            f"K={headline_k}",
        ),  # fmt: skip
        model=ModelChoice("last", state["iteration"], state["iteration"]),
        protocol={
            "test_tasks": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "query_points": config.eval_query_points,
            "step_size": meta_step_sizes or step_size_used(config, algorithm),
        },
        seconds=time.time() - started,
        config=to_dict(config),
        decimals=3,
        table_steps=sorted({0, min(1, config.eval_steps), config.eval_steps}),
        details={"pretrained_finetune_lr": finetune_lrs},
    )
    write_report(report, run_dir)
    plots = run_dir / "plots"
    for k in config.eval_shots:
        adaptation_curves(
            [c for c in curves if c.setting == f"K={k}"], plots / f"mse_vs_steps_K{k}.png",
            "MSE (query points)", f"sinusoid, K={k}", log_y=True,
        )  # fmt: skip
    plot_predictions(
        config, model, algorithm, pretrained, finetune_lrs, test, task_params,
        plots / "predictions.png",
    )  # fmt: skip
    metrics = read_metrics(run_dir)
    if metrics:
        keys = ["meta/query_loss", "inner/support_loss_pre"]
        learning_curve(
            metrics, keys, plots / "learning_curve.png", "MSE (training batches)", log_y=True
        )
    return report


def plot_predictions(
    config: SinusoidConfig,
    model: nn.Module,
    algorithm: MetaAlgorithm,
    pretrained: nn.Module,
    pretrained_lrs: dict[str, float],
    test: TaskBatch,
    task_params: SinusoidTaskParams,
    path: Path,
    task: int = 0,
    shown_steps: tuple[int, ...] = (0, 1, 10),
) -> Path:
    """The paper's Fig. 2: predictions before and after 1 and 10 steps, one panel per K."""
    shots = sorted(config.eval_shots)
    low, high = config.input_range
    xs = torch.linspace(low, high, 300).view(1, -1, 1)
    one_task = SinusoidTaskParams(
        task_params.amplitude[task : task + 1], task_params.phase[task : task + 1]
    )
    ys = task_distribution(config).targets(one_task, xs)[0]
    fig = new_figure(5 * len(shots), 7)
    axes = fig.subplots(2, len(shots), squeeze=False)
    for row, (name, net) in enumerate(((LABELS[config.algorithm], model),
                                       ("pretrained", pretrained))):  # fmt: skip
        for col, k in enumerate(shots):
            if row == 0:
                adapter, step_sizes = algorithm, test_step_sizes(config, algorithm)
            else:
                lr = pretrained_lrs.get(f"K={k}", config.inner_lr)
                adapter, step_sizes = finetuning(lr), None
            ax = axes[row][col]
            support = test.tasks(task, task + 1).with_shots(k)
            ax.plot(xs[0], ys, color="red", lw=2, label="ground truth")
            stages = adapter.adapt_steps(net, support, PROBLEM, max(shown_steps), step_sizes)
            for s, params in enumerate(stages):
                if s in shown_steps:
                    with torch.no_grad():
                        pred = task_forward(net, params, xs)[0]
                    label = "pre-update" if s == 0 else f"{s} grad step" + ("s" if s > 1 else "")
                    ax.plot(xs[0], pred, ls=":" if s == 0 else "--", label=label)
            ax.scatter(support.support_x[0, :, 0], support.support_y[0, :, 0], marker="^",
                       color="black", zorder=5, label="used for grad")  # fmt: skip
            ax.set_title(f"{name}, K={k}")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.legend(fontsize=7, loc="best")
    return save(fig, path, dpi=110)
