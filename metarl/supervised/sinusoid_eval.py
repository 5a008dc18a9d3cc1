"""``metarl evaluate`` for sinusoid regression: the paper's comparison of MAML with baselines.

Protocol (defaults in :class:`~metarl.supervised.config.SinusoidConfig`): ``eval_tasks`` fixed
test sinusoids drawn from ``eval_seed``; for every K in ``eval_shots`` the first K of the task's
support points are used to take ``eval_steps`` gradient steps (step size ``eval_lr``, else
``inner_lr``), and the MSE on ``eval_query_points`` query points is recorded after every step.
Methods: MAML, **pretrained** (fine-tuned the same way, its step size chosen on separate
validation tasks), **oracle** (given A and φ; no adaptation).

``eval.json`` schema::

    {"experiment": "sinusoid", "iteration": int, "protocol": {...},
     "results": {"K=<k>": {"<method>": {"steps": [int], "mean": [float], "ci95": [float]}}},
     "pretrained_finetune_lr": {"K=<k>": float}, "seconds": float}

``ci95`` is the half-width of the normal 95% confidence interval of the mean over test tasks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from metarl.config import to_dict  # noqa: E402
from metarl.plots import adaptation_curves, learning_curve  # noqa: E402
from metarl.run import atomic_torch_save, atomic_write_text, read_metrics, setup_cpu  # noqa: E402
from metarl.supervised.config import SinusoidConfig  # noqa: E402
from metarl.supervised.finetune import finetune_curve, mean_ci95  # noqa: E402
from metarl.supervised.models import sinusoid_mlp  # noqa: E402
from metarl.supervised.sinusoid import SinusoidTaskParams, oracle_inputs  # noqa: E402
from metarl.supervised.sinusoid_experiment import task_distribution, train_regressor  # noqa: E402
from metarl.supervised.tasks import TaskBatch, mse_per_task  # noqa: E402

BASELINES = "baselines.pt"
VALIDATION_TASKS = 200


def fixed_tasks(
    config: SinusoidConfig, n_tasks: int, seed: int
) -> tuple[TaskBatch, SinusoidTaskParams]:
    """Seeded test (or validation) tasks with ``max(eval_shots)`` support points each."""
    tasks = task_distribution(config)
    gen = torch.Generator().manual_seed(seed)
    return tasks.sample(n_tasks, max(config.eval_shots), config.eval_query_points, gen)


def _baseline_key(config: SinusoidConfig) -> dict[str, Any]:
    """The config fields a stored baseline depends on (a change retrains it)."""
    fields = (
        "seed", "amplitude_range", "phase_range", "input_range", "k_shot", "k_query",
        "hidden_sizes", "activation", "meta_batch_size", "baseline_iterations", "baseline_lr",
        "pretrained_finetune_lrs", "eval_seed", "eval_steps", "eval_query_points",
    )  # fmt: skip
    return {f: getattr(config, f) for f in fields}


def baselines(
    config: SinusoidConfig, run_dir: Path, retrain: bool = False, progress: bool = True
) -> tuple[nn.Module, nn.Module]:
    """The pretrained model and the oracle.

    Trained on first use and stored in ``run_dir/baselines.pt``; reused while the fields they
    depend on are unchanged.
    """
    path = run_dir / BASELINES
    pretrained = sinusoid_mlp(config.hidden_sizes, config.activation)
    oracle = sinusoid_mlp(config.hidden_sizes, config.activation, inputs=3)
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("key") == _baseline_key(config):
            pretrained.load_state_dict(state["pretrained"])
            oracle.load_state_dict(state["oracle"])
            return pretrained, oracle
    pretrained = train_regressor(config, oracle=False, progress=progress, desc="pretrained").cpu()
    oracle = train_regressor(config, oracle=True, progress=progress, desc="oracle").cpu()
    state = {
        "key": _baseline_key(config),
        "pretrained": pretrained.state_dict(),
        "oracle": oracle.state_dict(),
    }
    atomic_torch_save(state, path)
    return pretrained, oracle


def tune_finetune_lr(config: SinusoidConfig, model: nn.Module, k: int) -> tuple[float, dict]:
    """The paper fine-tunes the pretrained model "using an automatically tuned step size".

    For support size ``k``, each candidate of ``pretrained_finetune_lrs`` fine-tunes the model
    on ``VALIDATION_TASKS`` separate tasks (seed ``eval_seed + 1``); the one with the lowest
    mean query MSE over steps 1..S wins. A step size that diverges on any task scores inf.
    """
    val, _ = fixed_tasks(config, VALIDATION_TASKS, config.eval_seed + 1)
    val = val.with_shots(k)
    scores = {}
    for lr in config.pretrained_finetune_lrs:
        curve = finetune_curve(model, val, lr, config.eval_steps, mse_per_task)[1:]
        scores[lr] = curve.mean().item() if torch.isfinite(curve).all() else float("inf")
    return min(scores, key=scores.__getitem__), scores


def evaluate(
    config: SinusoidConfig,
    model: nn.Module,
    run_dir: Path,
    iteration: int,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol, write ``eval.json`` and the plots, and return the results."""
    started = time.time()
    setup_cpu(config.num_threads)
    model = model.cpu()
    pretrained, oracle = baselines(config, run_dir, retrain_baselines, progress)
    test, task_params = fixed_tasks(config, config.eval_tasks, config.eval_seed)
    with torch.no_grad():
        oracle_mse = mse_per_task(oracle(oracle_inputs(test.query_x, task_params)), test.query_y)
    oracle_mean, oracle_ci = mean_ci95(oracle_mse)

    results: dict[str, dict[str, Any]] = {}
    finetune_lrs: dict[str, float] = {}
    steps = list(range(config.eval_steps + 1))
    for k in config.eval_shots:
        shots = test.with_shots(k)
        finetune_lr, _ = tune_finetune_lr(config, pretrained, k)
        finetune_lrs[f"K={k}"] = finetune_lr
        per_method: dict[str, Any] = {}
        for name, net, lr in (
            ("MAML", model, config.test_lr),
            ("pretrained", pretrained, finetune_lr),
        ):
            curve = finetune_curve(net, shots, lr, config.eval_steps, mse_per_task)
            mean, ci = mean_ci95(curve)
            per_method[name] = {"steps": steps, "mean": mean, "ci95": ci}
        per_method["oracle"] = {"steps": [0], "mean": [oracle_mean], "ci95": [oracle_ci]}
        results[f"K={k}"] = per_method

    report = {
        "experiment": config.experiment,
        "iteration": iteration,
        "protocol": {
            "test_tasks": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "query_points": config.eval_query_points,
            "step_size": config.test_lr,
            "metric": "mean squared error on the query points",
        },
        "pretrained_finetune_lr": finetune_lrs,
        "results": results,
        "seconds": time.time() - started,
        "config": to_dict(config),
    }
    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=1))
    plots = run_dir / "plots"
    for key, per_method in results.items():
        adaptation_curves(
            per_method, plots / f"mse_vs_steps_{key.replace('=', '')}.png",
            "MSE (query points)", f"sinusoid, {key}", log_y=True,
        )  # fmt: skip
    plot_predictions(
        config, model, pretrained, finetune_lrs, test, task_params, plots / "predictions.png"
    )
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(metrics, ["meta/query_loss", "inner/support_loss_pre"],
                       plots / "learning_curve.png", log_y=True)  # fmt: skip
    return report


def plot_predictions(
    config: SinusoidConfig,
    model: nn.Module,
    pretrained: nn.Module,
    pretrained_lrs: dict[str, float],
    test: TaskBatch,
    task_params: SinusoidTaskParams,
    path: Path,
    task: int = 0,
) -> Path:
    """The paper's Fig. 2: predictions before and after 1 and 10 steps, for K = 5 and 10."""
    from metarl.core import expand_to_tasks, get_params, inner_step, task_forward

    shots = [k for k in (5, 10) if k <= test.support_x.shape[1]] or [test.support_x.shape[1]]
    low, high = config.input_range
    xs = torch.linspace(low, high, 300).view(1, -1, 1)
    one_task = SinusoidTaskParams(
        task_params.amplitude[task : task + 1], task_params.phase[task : task + 1]
    )
    ys = task_distribution(config).targets(one_task, xs)[0]
    xs = xs[0]
    fig, axes = plt.subplots(2, len(shots), figsize=(5 * len(shots), 7), squeeze=False)
    for row, (name, net) in enumerate((("MAML", model), ("pretrained", pretrained))):
        for col, k in enumerate(shots):
            lr = config.test_lr if name == "MAML" else pretrained_lrs.get(f"K={k}", config.test_lr)
            ax = axes[row][col]
            sx, sy = test.support_x[task : task + 1, :k], test.support_y[task : task + 1, :k]
            params = expand_to_tasks({n: p.detach() for n, p in get_params(net).items()}, 1)
            ax.plot(xs, ys, color="red", lw=2, label="ground truth")
            for s in range(11):
                if s in (0, 1, 10):
                    with torch.no_grad():
                        pred = task_forward(net, params, xs.unsqueeze(0))[0]
                    label = "pre-update" if s == 0 else f"{s} grad step" + ("s" if s > 1 else "")
                    ax.plot(xs, pred, ls=":" if s == 0 else "--", label=label)
                if s < 10:
                    params = inner_step(
                        lambda p, sx=sx, sy=sy: mse_per_task(task_forward(net, p, sx), sy),
                        params, lr, s, mode="first_order",
                    )  # fmt: skip
                    params = {n: p.detach() for n, p in params.items()}
            ax.scatter(sx[0, :, 0], sy[0, :, 0], marker="^", color="black", zorder=5,
                       label="used for grad")  # fmt: skip
            ax.set_title(f"{name}, K={k}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_table(report: dict[str, Any], steps: tuple[int, ...] = (0, 1, 10)) -> str:
    """A Markdown table of MSE ± ci95 per method, K and step."""
    header = (
        "| K | method | " + " | ".join(f"{s} step{'s' if s != 1 else ''}" for s in steps) + " |"
    )
    lines = [header, "|" + "---|" * (len(steps) + 2)]
    for key, per_method in report["results"].items():
        for method, curve in per_method.items():
            cells = []
            for s in steps:
                if s in curve["steps"]:
                    i = curve["steps"].index(s)
                    cells.append(f"{curve['mean'][i]:.3f} ± {curve['ci95'][i]:.3f}")
                elif len(curve["steps"]) == 1:
                    cells.append(f"{curve['mean'][0]:.3f} ± {curve['ci95'][0]:.3f}")
                else:
                    cells.append("–")
            lines.append(f"| {key[2:]} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
