"""``metarl evaluate`` for meta-RL: the paper's adaptation protocol (Finn et al. 2017, Fig. 4).

Protocol (defaults in :class:`~metarl.rl.config.RLConfig`): ``eval_tasks`` test tasks (40 goals)
drawn from ``eval_seed``. Every method starts from its parameters, samples
``eval_episodes_per_task`` episodes per task, takes a REINFORCE step on them (step sizes
``test_step_sizes``: α, then α/2), samples fresh episodes, and so on for ``eval_steps`` steps.
The score of a step is each task's mean undiscounted episode return; the table reports its mean
over tasks ± the standard error. All methods see the same tasks and the same action-noise stream.

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
  task-conditioned oracle is not adapted (``eval_lr_pretrained`` and ``eval_lr_random_init``
  give a baseline its own step sizes, as the paper's released test scripts did).
  ``oracle (PPO)`` samples its actions, as every other method here does and as the paper's
  oracle was scored; ``oracle (PPO, mean action)`` is the same policy acting with its mean, for
  reference (higher: it pays no exploration noise). The oracle's actions are clipped to the
  bounds it trained with (see :func:`~metarl.rl.sb3_baselines.oracle_actions`).

The report is an :class:`~metarl.reports.EvalReport` (``eval.json``); its error bars are
standard errors over test tasks, and gap closure is measured against the PPO oracle when it is
stored, else against the analytic one. Every curve keeps its per-task returns, so that the gap's
error bar can pair the methods task by task.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from metarl.config import to_dict
from metarl.core import get_params
from metarl.core.functional import Params
from metarl.envs import BatchedTaskEnv
from metarl.loop import progress_bar
from metarl.plots import adaptation_curves, learning_curve, new_figure, save
from metarl.references import paper_result
from metarl.reports import (
    Curve,
    EvalReport,
    Headline,
    MissingBaseline,
    ModelChoice,
    ReportError,
    read_report,
    select_model,
    write_report,
)
from metarl.rl.config import RLConfig
from metarl.rl.maml import sampled_adaptation
from metarl.rl.policy import GaussianMLPPolicy, build_policy
from metarl.rl.sampler import ActFn, rollout
from metarl.rl.sb3_baselines import (
    KINDS,
    StoredBaseline,
    baseline_command,
    load_baseline,
    oracle_actions,
)
from metarl.rl.task_envs import make_batched_env
from metarl.run import default_baselines_dir, load_checkpoint, load_weights, read_metrics
from metarl.runtime import set_num_threads

GAP_ORACLES = ("oracle_ppo", "oracle_analytic")
"""The oracles gap closure is measured against, in order of preference (never the mean-action
row, which pays no exploration noise)."""


TRAINING_ONLY = frozenset({
    "iterations", "meta_batch_size", "episodes_per_task", "inner_steps", "meta_gradient",
    "fd_epsilon", "max_kl", "cg_iterations", "cg_damping", "fisher_product", "fisher_subsample",
    "line_search_ratio", "line_search_steps", "line_search_rule", "log_every",
    "checkpoint_every", "checkpoint_minutes", "tensorboard", "eval_model",
    "eval_trajectory_goals", "baselines_dir", "eval_reuse_baselines",
})  # fmt: skip
"""Config keys that change how the meta-learned policy is trained or which one is tested, but
not how the protocol scores a baseline. Every other key counts in
:func:`baseline_fingerprint`, so a key added later invalidates stored baseline curves until it
is listed here."""


def baseline_fingerprint(config: RLConfig, baselines: Path) -> str:
    """A digest of everything the baselines' curves depend on: the config without its
    :data:`TRAINING_ONLY` keys, the bytes of the stored baseline files, and torch's version."""
    digest = hashlib.sha256()
    scoring = {k: v for k, v in to_dict(config).items() if k not in TRAINING_ONLY}
    digest.update(json.dumps(scoring, sort_keys=True).encode())
    for kind in KINDS:
        path = baselines / f"{kind}.pt"
        digest.update(kind.encode() + (path.read_bytes() if path.is_file() else b"none"))
    digest.update(torch.__version__.encode())
    return digest.hexdigest()


def stored_baseline_scores(run_dir: Path, fingerprint: str) -> EvalReport | None:
    """The run's ``eval.json`` if its baselines were scored under ``fingerprint``, else None."""
    try:
        report = read_report(run_dir)
    except ReportError:
        return None
    if report is None or report.details.get("baseline_fingerprint") != fingerprint:
        return None
    return report


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
    on_sample: Callable[[], object] | None = None,
    step_sizes: Sequence[float] | None = None,
) -> AdaptationCurve:
    """Adapt ``policy`` to every task with ``config.eval_steps`` REINFORCE steps (first order),
    of ``step_sizes`` (default ``config.test_step_sizes``; the last one repeats).

    ``env.num_envs`` must be ``len(tasks) * config.eval_episodes_per_task``. The policy is not
    modified.
    """
    sizes = list(config.test_step_sizes if step_sizes is None else step_sizes)
    episodes, stages = sampled_adaptation(
        env, tasks, config.eval_episodes_per_task, policy, get_params(policy), config.eval_steps,
        sizes, config, generator, check_finite=False, on_sample=on_sample,
    )  # fmt: skip
    returns = torch.stack([batch.task_returns() for batch in episodes])
    trajectories = [(batch.observations[:, :, 0], batch.masks[:, :, 0]) for batch in episodes]
    return AdaptationCurve(returns, trajectories, stages)


def choose_model(config: RLConfig, state: dict[str, Any]) -> tuple[GaussianMLPPolicy, ModelChoice]:
    """The policy the protocol tests (``config.eval_model``) from a run's checkpoint ``state``.

    ``best`` takes the best model the trainer kept; a checkpoint from before it was kept falls
    back to the last model and says so (:func:`~metarl.reports.select_model`).
    """
    policy = build_policy(config)
    source, chosen = select_model(state, config.eval_model)
    load_weights(policy, source["model"], f"the checkpoint's {chosen.choice} model")
    return policy.eval(), chosen


def evaluate(
    config: RLConfig, run_dir: Path, retrain_baselines: bool = False, progress: bool = True
) -> EvalReport:
    """Run the protocol on the run's policy, write ``eval.json`` and the plots.

    ``retrain_baselines`` is accepted for the CLI's uniform call: the baselines here need no
    training (the random policy is rebuilt from the seed, the oracles are analytic or stored by
    ``metarl baseline``). ``progress`` shows a bar over the batches of episodes sampled.
    With ``config.eval_reuse_baselines`` the baselines' curves come from the run's earlier
    ``eval.json`` when its :func:`baseline_fingerprint` matches: only MAML is scored again.
    """
    del retrain_baselines
    started = time.time()
    set_num_threads(config.num_threads)
    model, chosen = choose_model(config, load_checkpoint(run_dir))
    n_envs = config.eval_tasks * config.eval_episodes_per_task
    env = make_batched_env(config.env, n_envs, config.horizon)
    tasks = env.sample_tasks(config.eval_tasks, np.random.default_rng(config.eval_seed))
    curves: list[Curve] = []

    baselines = Path(config.baselines_dir or default_baselines_dir(run_dir, config.experiment))
    fingerprint = baseline_fingerprint(config, baselines)
    earlier = stored_baseline_scores(run_dir, fingerprint) if config.eval_reuse_baselines else None
    stored: dict[str, StoredBaseline | None] = {}
    if earlier is not None:  # nothing to load: only MAML is scored
        print("baselines: the scores in eval.json (same settings, files and torch)", flush=True)
    else:
        stored = {kind: load_baseline(baselines / f"{kind}.pt", config) for kind in KINDS}
    analytic = config.env in ORACLES and earlier is None
    # MAML, random init and pretrained adapt; the oracles only roll out
    adapting = 1 + (earlier is None) + (stored.get("pretrained") is not None)
    rollouts = 2 * (stored.get("oracle") is not None) + analytic
    bar = progress_bar(total=adapting * (config.eval_steps + 1) + rollouts, desc="evaluate",
                       unit="batch", disable=not progress)  # fmt: skip

    step_sizes: dict[str, list[float]] = {}  # by method, for the report

    def adapted(method: str, label: str, policy: GaussianMLPPolicy) -> AdaptationCurve:
        generator = torch.Generator().manual_seed(config.eval_seed)  # the same noise for all
        env.seed(config.eval_seed)
        bar.set_postfix_str(label)
        sizes = step_sizes[method] = config.step_sizes_of(method)
        curve = adaptation_curve(policy, env, tasks, config, generator, bar.update, sizes)
        curves.append(Curve.from_samples(method, label, curve.returns, "stderr",
                                         keep_per_task=True))  # fmt: skip
        return curve

    def not_adapted(method: str, label: str, act: ActFn) -> None:
        env.seed(config.eval_seed)
        bar.set_postfix_str(label)
        returns = rollout(env, tasks, config.eval_episodes_per_task, act).task_returns()
        bar.update()
        curves.append(Curve.from_samples(method, label, returns.unsqueeze(0), "stderr", [0],
                                         keep_per_task=True))  # fmt: skip

    maml = adapted("meta_learned", "MAML", model)
    trained: dict[str, dict[str, Any]] = {}
    missing: list[MissingBaseline] = []
    if earlier is not None:  # the same numbers a new measurement would give, without its cost
        curves += [c for c in earlier.curves if c.method != "meta_learned"]
        trained, missing = earlier.baselines, earlier.missing
        step_sizes.update({c.method: config.step_sizes_of(c.method) for c in curves
                           if c.method in ("random_init", "pretrained")})  # fmt: skip
    else:
        adapted("random_init", "random init", build_policy(config))
    for kind, baseline in stored.items():
        if baseline is None:
            how = f"`{baseline_command(config, kind, baselines)}`"
            missing.append(MissingBaseline(kind, f"none for this network in {baselines} ({how})"))
            continue
        trained[kind] = baseline.info
        if kind == "pretrained":
            adapted("pretrained", "pretrained", baseline.policy)
        else:  # scored like the other methods (sampled actions), and with its mean action
            task_features = env.task_array(tasks)
            noise = torch.Generator().manual_seed(config.eval_seed)
            not_adapted("oracle_ppo", "oracle (PPO)",
                        oracle_actions(baseline.policy, task_features, noise))  # fmt: skip
            not_adapted("oracle_ppo_mean_action", "oracle (PPO, mean action)",
                        oracle_actions(baseline.policy, task_features))  # fmt: skip
    if analytic:
        not_adapted("oracle_analytic", "oracle", ORACLES[config.env](env, tasks))

    bar.close()
    paper = paper_result(config.experiment)
    report = EvalReport(
        experiment=config.experiment,
        family="meta_rl",
        metric="mean undiscounted episode return per task",
        higher_is_better=True,
        error_bar="stderr",
        curves=curves,
        headline=Headline("return after 1 step", "meta_learned", min(1, config.eval_steps)),
        model=chosen,
        protocol={
            "test_tasks": config.eval_tasks,
            "eval_seed": config.eval_seed,
            "episodes_per_step": config.eval_episodes_per_task,
            "step_sizes": config.test_step_sizes,
            **(
                {"step_sizes_by_method": step_sizes}
                if any(s != config.test_step_sizes for s in step_sizes.values())
                else {}
            ),
            "steps": config.eval_steps,
        },
        seconds=time.time() - started,
        config=to_dict(config),
        table_steps=list(range(config.eval_steps + 1)),
        references=list(paper.curves) if paper is not None else [],
        gap_oracle=next((o for o in GAP_ORACLES if any(c.method == o for c in curves)), None),
        baselines=trained,
        missing=missing,
        details={"baseline_fingerprint": fingerprint, "baselines_reused": earlier is not None},
    )
    write_report(report, run_dir)
    plots = run_dir / "plots"
    adaptation_curves(
        curves, plots / "return_vs_steps.png", "average return", f"{config.env}, MAML-TRPO"
    )
    if config.eval_trajectory_goals > 0 and config.env == "navigation2d":
        plot_trajectories(maml, tasks, config.eval_trajectory_goals, plots / "trajectories.png")
    metrics = read_metrics(run_dir)
    if metrics:
        learning_curve(
            metrics, ["returns/pre_adaptation", "returns/post_adaptation"],
            plots / "learning_curve.png", "average return (training tasks)",
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
    fig = new_figure(3.4 * n_goals, 3.6)
    axes = fig.subplots(1, n_goals, squeeze=False)
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
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(f"goal {i}")
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels, off the data
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7)
    return save(fig, path, dpi=110, bottom=0.12)
