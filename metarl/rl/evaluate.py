"""``metarl evaluate`` for meta-RL: the paper's adaptation protocol (Finn et al. 2017, Fig. 4).

Protocol (defaults in :class:`~metarl.rl.config.RLConfig`): ``eval_tasks`` test tasks (40 goals)
drawn from ``eval_seed``. Every method starts from its parameters, samples ``eval_episodes``
episodes per task, takes a REINFORCE step on them (step sizes ``test_step_sizes``: α, then α/2),
samples fresh episodes, and so on for ``eval_steps`` steps. The score of a step is each task's
mean undiscounted episode return; the table reports its mean over tasks ± the standard error.
All methods see the same tasks and the same action-noise stream.

Methods:

- ``MAML``: the meta-trained policy: by default the one with the best post-adaptation return
  during training, as in the paper (App. A.2; ``eval_model: last`` tests the final one);
- ``random init``: the same adaptation from the untrained policy the run started from;
- ``oracle``: a controller that is given the task. For 2D navigation it is analytic: it moves
  ``clip(goal − position, ±0.1)`` per step, which reaches the closest point to the goal that
  any policy can reach at every step, hence the best possible return (the paper's oracle was a
  goal-conditioned policy trained with TRPO, so it is somewhat weaker: −2.3).
- ``pretrained`` and ``oracle (PPO)``: the Stable-Baselines3 baselines of
  :mod:`metarl.rl.sb3_baselines` (``metarl baseline {pretrained,oracle} EXPERIMENT``), when
  stored in ``baselines_dir``: the pretrained policy is adapted exactly like MAML, the
  task-conditioned oracle is not adapted. ``oracle (PPO)`` samples its actions, as every other
  method here does and as the paper's oracle was scored; ``oracle (PPO, mean action)`` is the
  same policy acting with its mean, for reference (higher: it pays no exploration noise). The
  oracle's actions are clipped to the bounds it trained with (see
  :func:`~metarl.rl.sb3_baselines.oracle_actions`).

``eval.json`` schema::

    {"experiment": str, "iteration": int,
     "protocol": {"test_tasks", "eval_seed", "episodes_per_step", "step_sizes", "steps",
                  "metric"},
     "model": {"choice": "best" | "last", "iteration": int, "checkpoint_iteration": int,
               ["training_return": float], ["note": str]},  # the policy tested (eval_model),
                                                              # in a run at checkpoint_iteration
     "results": {"<method>": {"steps": [int], "mean": [float], "stderr": [float]}},
     "paper": {"<method>": {"steps": [int], "mean": [float]}},   # reference numbers, if known
     "baselines": {"<kind>": {training info}}, "missing": [str],  # SB3 baselines used / not
     "seconds": float, "config": {...}}

The oracle does not adapt: its lists have the single step 0.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from metarl.config import to_dict  # noqa: E402
from metarl.core import expand_to_tasks, get_params, inner_step  # noqa: E402
from metarl.core.functional import Params  # noqa: E402
from metarl.envs import BatchedTaskEnv  # noqa: E402
from metarl.plots import adaptation_curves, learning_curve  # noqa: E402
from metarl.rl.baseline import LinearFeatureBaseline  # noqa: E402
from metarl.rl.config import RLConfig  # noqa: E402
from metarl.rl.episodes import with_advantages  # noqa: E402
from metarl.rl.maml import inner_loss  # noqa: E402
from metarl.rl.policy import GaussianMLPPolicy  # noqa: E402
from metarl.rl.sampler import ActFn, rollout, sample_episodes  # noqa: E402
from metarl.rl.sb3_baselines import KINDS, default_dir, load_baseline, oracle_actions  # noqa: E402
from metarl.rl.task_envs import make_batched_env  # noqa: E402
from metarl.rl.trainer import build_policy  # noqa: E402
from metarl.run import (  # noqa: E402
    CHECKPOINT,
    atomic_write_text,
    load_checkpoint,
    read_metrics,
    setup_cpu,
)

PAPER: dict[str, dict[str, dict[str, list[float]]]] = {
    # Average return on 2D navigation, Finn et al. 2017 (Fig. 4), as quoted by issue 3; the
    # paper's oracle is a trained goal-conditioned policy, not the analytic one used here.
    "navigation2d": {
        "MAML": {"steps": [0, 1, 2], "mean": [-40.4, -11.68, -3.3]},
        "oracle": {"steps": [0], "mean": [-2.3]},
    },
}


def navigation_oracle(env: BatchedTaskEnv, tasks: list[dict[str, Any]]) -> ActFn:
    """The optimal 2D-navigation controller: step straight at the goal, at most 0.1 per axis.

    Its position after ``t`` steps is the projection of the goal onto the square of half-width
    ``0.1 t`` reachable by then, so every step's distance is the smallest possible.
    """
    goals = torch.as_tensor(np.stack([task["goal"] for task in tasks]), dtype=torch.float32)
    scale = float(env.action_scale)  # type: ignore[attr-defined]

    def act(obs: Tensor) -> Tensor:
        return ((goals.unsqueeze(1) - obs) / scale).clamp(-1.0, 1.0)

    return act


ORACLES: dict[str, Callable[[BatchedTaskEnv, list[dict[str, Any]]], ActFn]] = {
    "navigation2d": navigation_oracle,
}


class AdaptationCurve(NamedTuple):
    """Returns of every test task along the adaptation.

    Attributes:
        returns: ``(steps + 1, n_tasks)``, row ``s`` after ``s`` gradient steps.
        trajectories: per step, observations ``(T, n_tasks, obs_dim)`` and masks ``(T, n_tasks)``
            of each task's first episode (for plots).
        params: per step, the adapted parameters (task dimension first, detached).
    """

    returns: Tensor
    trajectories: list[tuple[Tensor, Tensor]]
    params: list[Params]


def adaptation_curve(
    policy: GaussianMLPPolicy,
    env: BatchedTaskEnv,
    tasks: list[dict[str, Any]],
    config: RLConfig,
    generator: torch.Generator,
) -> AdaptationCurve:
    """Adapt ``policy`` to every task with ``config.eval_steps`` REINFORCE steps (first order).

    ``env.num_envs`` must be ``len(tasks) * config.eval_episodes``. The policy is not modified.
    """
    baseline = LinearFeatureBaseline(config.baseline_reg)
    params = expand_to_tasks({n: p.detach() for n, p in get_params(policy).items()}, len(tasks))
    returns, trajectories, stages = [], [], []
    for step in range(config.eval_steps + 1):
        stages.append(params)
        episodes = sample_episodes(env, tasks, config.eval_episodes, policy, params, generator)
        returns.append(episodes.task_returns())
        trajectories.append((episodes.observations[:, :, 0], episodes.masks[:, :, 0]))
        if step == config.eval_steps:
            break
        episodes = with_advantages(
            episodes, baseline, config.gamma, config.gae_lambda, config.normalize_advantages
        )
        params = inner_step(
            inner_loss(policy, episodes), params, config.test_step_sizes, step,
            mode="first_order", check_finite=False,
        )  # fmt: skip
        params = {n: p.detach() for n, p in params.items()}
    return AdaptationCurve(torch.stack(returns), trajectories, stages)


def mean_stderr(values: Tensor) -> tuple[list[float], list[float]]:
    """Mean over the last dimension and its standard error ``std (ddof 1) / sqrt(n)``."""
    n = values.shape[-1]
    stderr = values.std(dim=-1) / math.sqrt(n) if n > 1 else torch.zeros(values.shape[:-1])
    return values.mean(dim=-1).tolist(), stderr.tolist()


def choose_model(
    config: RLConfig, model: GaussianMLPPolicy, run_dir: Path, iteration: int
) -> tuple[GaussianMLPPolicy, int, dict[str, Any]]:
    """The policy the protocol tests (``config.eval_model``), its iteration, and a record of it.

    ``best`` takes the best model the trainer kept in the run's checkpoint; a checkpoint from
    before it was kept (or no checkpoint) falls back to ``model``, the last one, and says so.
    The record's ``checkpoint_iteration`` is ``iteration``, the run's state when it was tested.
    """
    state = load_checkpoint(run_dir) if (run_dir / CHECKPOINT).is_file() else {}
    best = state.get("best")
    if config.eval_model == "last" or best is None:
        chosen: dict[str, Any] = {
            "choice": "last", "iteration": iteration, "checkpoint_iteration": iteration
        }  # fmt: skip
        if config.eval_model == "best":
            chosen["note"] = "no best model in the checkpoint (trained before it was kept)"
        return model, iteration, chosen
    policy = build_policy(config)
    policy.load_state_dict(best["model"])
    policy.eval()
    chosen = {
        "choice": "best", "iteration": best["iteration"], "training_return": best["return"],
        "checkpoint_iteration": iteration,
    }  # fmt: skip
    return policy, best["iteration"], chosen


def evaluate(
    config: RLConfig,
    model: nn.Module,
    run_dir: Path,
    iteration: int,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol on the trained ``model``, write ``eval.json`` and the plots.

    ``retrain_baselines`` and ``progress`` are accepted for the CLI; the baselines here need
    no training (the random policy is rebuilt from the seed, the oracle is analytic).
    """
    del retrain_baselines, progress
    started = time.time()
    setup_cpu(config.num_threads)
    if not isinstance(model, GaussianMLPPolicy):
        raise TypeError(f"expected a GaussianMLPPolicy, got {type(model).__name__}")
    model, iteration, chosen = choose_model(config, model, run_dir, iteration)
    env = make_batched_env(config.env, config.eval_tasks * config.eval_episodes, config.horizon)
    tasks = env.sample_tasks(config.eval_tasks, np.random.default_rng(config.eval_seed))
    steps = list(range(config.eval_steps + 1))

    results: dict[str, dict[str, list[Any]]] = {}
    curves: dict[str, AdaptationCurve] = {}
    for name, policy in (("MAML", model.cpu()), ("random init", build_policy(config))):
        generator = torch.Generator().manual_seed(config.eval_seed)  # same noise for both
        env.seed(config.eval_seed)
        curves[name] = adaptation_curve(policy, env, tasks, config, generator)
        mean, stderr = mean_stderr(curves[name].returns)
        results[name] = {"steps": steps, "mean": mean, "stderr": stderr}
    trained, missing = {}, []
    baselines = Path(config.baselines_dir or default_dir(run_dir, config.experiment))
    for kind in KINDS:
        stored = load_baseline(baselines / f"{kind}.pt", config)
        if stored is None:
            missing.append(
                f"{kind}: none for this environment/network in {baselines} "
                f"(`metarl baseline {kind} {config.experiment}`)"
            )
            continue
        trained[kind] = stored.info
        if kind == "pretrained":
            generator = torch.Generator().manual_seed(config.eval_seed)
            env.seed(config.eval_seed)
            curve = adaptation_curve(stored.policy, env, tasks, config, generator)
            mean, stderr = mean_stderr(curve.returns)
            results["pretrained"] = {"steps": steps, "mean": mean, "stderr": stderr}
        else:  # scored like the other methods (sampled actions), and with its mean action
            for name, generator in (
                ("oracle (PPO)", torch.Generator().manual_seed(config.eval_seed)),
                ("oracle (PPO, mean action)", None),
            ):
                env.seed(config.eval_seed)
                act = oracle_actions(stored.policy, env.task_array(tasks), generator)
                oracle = rollout(env, tasks, config.eval_episodes, act)
                mean, stderr = mean_stderr(oracle.task_returns().unsqueeze(0))
                results[name] = {"steps": [0], "mean": mean, "stderr": stderr}
    if config.env in ORACLES:
        env.seed(config.eval_seed)
        oracle = rollout(env, tasks, config.eval_episodes, ORACLES[config.env](env, tasks))
        mean, stderr = mean_stderr(oracle.task_returns().unsqueeze(0))
        results["oracle"] = {"steps": [0], "mean": mean, "stderr": stderr}

    report = {
        "experiment": config.experiment,
        "iteration": iteration,
        "model": chosen,
        "protocol": {
            "test_tasks": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "episodes_per_step": config.eval_episodes,
            "step_sizes": config.test_step_sizes,
            "steps": config.eval_steps,
            "metric": "mean undiscounted episode return per task; mean ± stderr over tasks",
        },
        "results": results,
        "paper": PAPER.get(config.env, {}),
        "baselines": trained,
        "missing": missing,
        "seconds": time.time() - started,
        "config": to_dict(config),
    }
    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=1))
    plots = run_dir / "plots"
    adaptation_curves(
        results, plots / "return_vs_steps.png", "average return", f"{config.env}, MAML-TRPO"
    )
    if config.eval_trajectory_goals > 0 and config.env == "navigation2d":
        plot_trajectories(
            curves["MAML"], tasks, config.eval_trajectory_goals, plots / "trajectories.png"
        )
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(
            metrics, ["returns/pre_adaptation", "returns/post_adaptation"],
            plots / "learning_curve.png",
        )  # fmt: skip
    return report


def plot_trajectories(
    curve: AdaptationCurve,
    tasks: list[dict[str, Any]],
    n_goals: int,
    path: Path,
    steps: Sequence[int] | None = None,
) -> Path:
    """2D trajectories before and after adaptation, one panel per goal (like Fig. 4, right).

    Args:
        curve: an :class:`AdaptationCurve` of a navigation policy.
        tasks: the tasks it was computed on (their ``goal`` is drawn).
        n_goals: panels (the first ``n_goals`` tasks).
        path: output file.
        steps: gradient steps drawn; default 0, 1 and the last.
    """
    last = len(curve.trajectories) - 1
    steps = sorted({0, min(1, last), last}) if steps is None else list(steps)
    n_goals = min(n_goals, len(tasks))
    fig, axes = plt.subplots(1, n_goals, figsize=(3.4 * n_goals, 3.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for s in steps:
            obs, masks = curve.trajectories[s]
            valid = obs[:, i][masks[:, i].bool()]
            path_xy = torch.cat([torch.zeros(1, 2), valid])  # every episode starts at the origin
            label = "pre-update" if s == 0 else f"{s} step" + ("s" if s > 1 else "")
            ax.plot(path_xy[:, 0], path_xy[:, 1], marker=".", ms=3, lw=1, label=label)
        goal = tasks[i]["goal"]
        ax.scatter([goal[0]], [goal[1]], marker="*", s=160, color="red", zorder=5, label="goal")
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(f"goal {i}")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_table(report: dict[str, Any]) -> str:
    """A Markdown table: average return ± stderr per method and number of gradient steps."""
    n_steps = max(len(curve["steps"]) for curve in report["results"].values())
    steps = list(range(n_steps))
    header = "| method | " + " | ".join(f"{s} step{'' if s == 1 else 's'}" for s in steps) + " |"
    lines = [header, "|" + "---|" * (n_steps + 1)]

    def cell(curve: dict[str, list[float]], s: int) -> str:
        if len(curve["steps"]) == 1:  # a method without adaptation: the same at every step
            s = curve["steps"][0]
        if s not in curve["steps"]:
            return "–"
        i = curve["steps"].index(s)
        mean = f"{curve['mean'][i]:.2f}"
        return f"{mean} ± {curve['stderr'][i]:.2f}" if "stderr" in curve else mean

    for method, curve in report["results"].items():
        lines.append(f"| {method} | " + " | ".join(cell(curve, s) for s in steps) + " |")
    for method, curve in report.get("paper", {}).items():
        lines.append(f"| paper: {method} | " + " | ".join(cell(curve, s) for s in steps) + " |")
    lines += [f"not evaluated: {why}" for why in report.get("missing", [])]
    return "\n".join(lines)
