"""The Python API: train and evaluate experiments, load trained runs, adapt them to new tasks.

The command line is built on these functions, so ``metarl train sinusoid --set iterations=500``
and ``metarl.train("sinusoid", {"iterations": 500})`` do the same thing (here 50 iterations,
a few seconds)::

    >>> import metarl, torch
    >>> result = metarl.train("sinusoid", {"iterations": 50}, out="runs/s50", progress=False)
    >>> result.run_dir, result.config.iterations
    (PosixPath('runs/s50'), 50)
    >>> run = metarl.load_run(result.run_dir)
    >>> x = torch.linspace(-5, 5, 10).unsqueeze(-1)                 # one task's support set
    >>> adapted = run.adapt(x, torch.sin(x), steps=5)
    >>> run.predict(torch.tensor([[0.5], [1.0]]), adapted).shape    # predictions at 0.5 and 1
    torch.Size([2, 1])

For meta-RL, :meth:`LoadedRun.adapt_policy` adapts the policy to a task by sampling episodes,
and :meth:`~metarl.rl.policy.GaussianMLPPolicy.act` acts with it.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from metarl.config import ConfigError, from_dict, to_dict, upgrade, write_yaml
from metarl.core import Params, TaskBatch
from metarl.distributed import close_world, init_world
from metarl.experiments import (
    Overrides,
    as_overrides,
    get_experiment,
    load_config,
    preflight,
    stored_config,
)
from metarl.reports import EvalReport
from metarl.run import (
    CHECKPOINT,
    CONFIG,
    atomic_torch_save,
    default_run_dir,
    load_checkpoint,
    log_evaluation,
    prepare_new_run_dir,
    run_lock,
)

RESUME_OVERRIDES = ("iterations", "num_threads", "time_budget")
"""Config keys a resumed run may change: the budget and how the run uses the CPU."""
EVALUATION_KEYS = (
    "num_threads", "baselines_dir", "baseline_iterations", "baseline_lr", "pretrained_finetune_lrs",
)  # fmt: skip
"""Config keys besides ``eval_*`` that an evaluation may change."""


class Training(NamedTuple):
    """What :func:`train` did: the run directory, its config, and the evaluation if asked;
    ``main`` is False on the processes other than rank 0 of a distributed run (which write
    nothing)."""

    run_dir: Path
    config: Any
    report: EvalReport | None
    main: bool = True


def train(
    experiment: str,
    overrides: Overrides = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    evaluate: bool = False,
    progress: bool = True,
    time_limit: float | None = None,
) -> Training:
    """Train an experiment (``metarl train``), or continue a stopped run exactly.

    Under ``torchrun`` every process calls this; they share the work and rank 0 alone writes
    the run directory (:mod:`metarl.distributed`).

    Args:
        experiment: an experiment name (``metarl list``) or a YAML file.
        overrides: config overrides, ``{"iterations": 500}`` or ``["iterations=500"]``; with
            ``resume`` only ``iterations``, ``num_threads`` and ``time_budget`` may change.
        out: the run directory (default ``runs/<experiment>-<time>``).
        resume: a run directory to continue instead (``out`` is then unused); also with
            another number of processes than the run started with.
        evaluate: run the paper's evaluation afterwards (``metarl evaluate``), unless the time
            limit ended the session before the budget.
        progress: progress bars.
        time_limit: minutes of this session: training stops at the first end of a
            ``log_every`` window after them and checkpoints there; ``resume`` continues it
            exactly. None: train to ``iterations``.

    Raises:
        ConfigError: a bad config (before anything is written).
        RunError: the run directory is in use, holds another run, or cannot be read.
    """
    if time_limit is not None and not time_limit >= 0:
        raise ConfigError(f"time limit: {time_limit} minutes; give a number ≥ 0")
    stop_at = None if time_limit is None else time.time() + 60.0 * time_limit
    if resume is not None:
        run_dir = Path(resume)
        state = load_checkpoint(run_dir, experiment=experiment)  # a clear error before locking
        config = resumed_config(state, overrides)
    else:
        config = load_config(experiment, overrides)
        preflight(config)  # data, memory: everything is checked before a directory exists
        run_dir = Path(out) if out is not None else default_run_dir(config.experiment)
    world = init_world(config.device)
    main = world is None or world.is_main
    if world is not None:
        if not hasattr(config, "meta_batch_size"):
            raise ConfigError(f"{config.experiment} (ordinary training) runs on one process")
        world.shard(config.meta_batch_size)  # refuses more processes than tasks, up front
        if time_limit is not None:  # each process's clock would stop it at another iteration
            raise ConfigError("time limit: a run under torchrun stops by iterations or Ctrl-C")
    try:
        lock = run_lock(run_dir, f"metarl train {experiment}") if main else nullcontext()
        with lock:
            state = None
            if resume is not None:
                state = load_checkpoint(run_dir, experiment=experiment)
                if state["iteration"] == config.iterations:
                    if main:
                        _declare_finished(run_dir, state, config)
                    report = _evaluate(config, run_dir, progress) if evaluate and main else None
                    return Training(run_dir, config, report, main)
            elif main:
                prepare_new_run_dir(run_dir)
            if main:
                write_yaml(run_dir / CONFIG, to_dict(config))
                if progress:
                    print(f"run directory: {run_dir}")
            experiment_ = get_experiment(config.experiment)
            experiment_.train(config, run_dir, state, progress=progress and main, stop_at=stop_at)
            if world is not None:  # the evaluation is rank 0's alone: the others may leave
                close_world(finished=True)
            # a session that the time limit ended is not the trained model `evaluate` asked for
            cut_short = stop_at is not None and stopped_early(run_dir, config)
            report = (
                _evaluate(config, run_dir, progress)
                if evaluate and main and not cut_short
                else None
            )
    finally:
        if world is not None:
            close_world()
    return Training(run_dir, config, report, main)


def stopped_early(run_dir: Path, config: Any) -> bool:
    """Whether the run's checkpoint is short of its budget: of iterations, and of the time
    budget, if it has one, on the budget's clock."""
    state = load_checkpoint(run_dir)
    if state["iteration"] >= config.iterations:
        return False
    budget = getattr(config, "time_budget", 0.0)
    clock = "cpu_elapsed" if getattr(config, "budget_clock", "wall") == "cpu" else "elapsed"
    return not (budget and state.get(clock, 0.0) >= budget)


def _declare_finished(run_dir: Path, state: dict[str, Any], config: Any) -> None:
    """A run already at its budget: say so, and record a changed budget in the checkpoint (a
    longer run stopped early and declared finished here: the checkpoint's own budget is what
    `metarl bench` reads to decide whether to resume)."""
    print(f"{run_dir} finished {state['iteration']} iterations", file=sys.stderr)
    if state["config"] != to_dict(config):
        state["config"] = to_dict(config)
        atomic_torch_save(state, run_dir / CHECKPOINT)
        write_yaml(run_dir / CONFIG, state["config"])


def _evaluate(config: Any, run_dir: Path, progress: bool, retrain: bool = False) -> EvalReport:
    experiment = get_experiment(config.experiment)
    report = experiment.evaluate(config, run_dir, retrain_baselines=retrain, progress=progress)
    log_evaluation(run_dir, report)
    return report


def resumed_config(state: dict[str, Any], overrides: Overrides) -> Any:
    """A checkpoint's config with the overrides a resumed run accepts.

    Raises:
        ConfigError: another key is overridden, or the run would be shortened.
    """
    cls = get_experiment(state["config"]["experiment"]).config_cls
    values = upgrade(cls, state["config"])
    for key, value in as_overrides(overrides).items():
        if key not in RESUME_OVERRIDES:
            raise ConfigError(
                f"--set {key}: a resumed run keeps its config; only "
                f"{', '.join(f'`{k}`' for k in RESUME_OVERRIDES[:-1])} and "
                f"`{RESUME_OVERRIDES[-1]}` may change"
            )
        values[key] = value
    config = from_dict(cls, values)
    if state["iteration"] > config.iterations:
        raise ConfigError(
            f"--set iterations={config.iterations}: the run already ran {state['iteration']} "
            "iterations, and a run cannot be shortened"
        )
    return config


def evaluate(
    run_dir: str | Path,
    overrides: Overrides = None,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> EvalReport:
    """The paper's evaluation of a trained run (``metarl evaluate``): writes ``eval.json`` and
    the plots into the run directory and returns the report.

    Args:
        run_dir: the run.
        overrides: evaluation settings only (``eval_*``, ``num_threads``, baselines).
        retrain_baselines: train the baselines again even if stored ones match.
        progress: progress bars.
    """
    run_dir = Path(run_dir)
    experiment, config = stored_config(load_checkpoint(run_dir))
    values = to_dict(config)
    allowed = sorted(k for k in values if k.startswith("eval_") or k in EVALUATION_KEYS)
    renamed = getattr(experiment.config_cls, "RENAMED", {})
    for key, value in as_overrides(overrides).items():
        if key in renamed:
            raise ConfigError(f"config key {key!r} was renamed to {renamed[key]!r}")
        if key not in allowed:
            raise ConfigError(
                f"--set {key}: `metarl evaluate` tests the trained model as it was trained; "
                f"it may change the evaluation's own keys: {', '.join(allowed)}"
            )
        values[key] = value
    config = from_dict(experiment.config_cls, values)
    with run_lock(run_dir, "metarl evaluate"):
        return _evaluate(config, run_dir, progress, retrain_baselines)


class PolicyAdaptation(NamedTuple):
    """A meta-RL policy adapted to one task by sampling.

    Attributes:
        params: the policy's parameters after 0, 1, ..., steps gradient steps (no task
            dimension; pass one to ``policy.act(obs, params=...)``).
        returns: the mean undiscounted return of the episodes sampled with each.
    """

    params: list[Params]
    returns: list[float]


@dataclass
class LoadedRun:
    """A trained run, ready to use from Python.

    Attributes:
        model: the trained network (CPU, eval mode): for meta-RL a
            :class:`~metarl.rl.policy.GaussianMLPPolicy`.
        config: the run's validated config.
        iteration: the model's meta-iteration.
        run_dir: the run directory.
        which: ``best`` (the best model of training, the meta-RL protocol's) or ``last``.
        algorithm: supervised runs: how the model adapts at test time (with its meta-learned
            step sizes); None for meta-RL.
        checkpoint: the checkpoint, as stored (tensors and plain types).
    """

    model: nn.Module
    config: Any
    iteration: int
    run_dir: Path
    which: Literal["best", "last"]
    algorithm: Any
    checkpoint: dict[str, Any]

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        step_size: float | list[float] | None = None,
    ) -> Params:
        """Supervised: adapt to one task's support set, as ``metarl evaluate`` does.

        Args:
            support_x: the task's inputs ``(K, *input_shape)``.
            support_y: their targets ``(K, *target_shape)`` (labels ``0..N−1`` for a classifier).
            steps: gradient steps (default the config's ``eval_steps``).
            step_size: the step size (default the algorithm's own: meta-learned or
                ``inner_lr``).

        Returns:
            The adapted parameters (no task dimension), for :meth:`predict`.
        """
        if self.algorithm is None:
            raise ConfigError("adapt() adapts a supervised run; for meta-RL use adapt_policy()")
        problem = _problem(self.config)
        one = TaskBatch(support_x[None], support_y[None], support_x[None], support_y[None])
        steps = self.config.eval_steps if steps is None else steps
        *_, params = self.algorithm.adapt_steps(self.model, one, problem, steps, step_size)
        return {name: p[0] for name, p in params.items()}

    def predict(self, x: Tensor, params: Params | None = None) -> Tensor:
        """The model's output on ``x`` (a batch of inputs), at ``params`` (default θ)."""
        from metarl.core import single_forward

        with torch.no_grad():
            return self.model(x) if params is None else single_forward(self.model, params, x)

    def adapt_policy(
        self,
        task: dict[str, Any],
        steps: int | None = None,
        episodes: int | None = None,
        seed: int = 0,
    ) -> PolicyAdaptation:
        """Meta-RL: adapt the policy to ``task`` by sampling episodes and taking REINFORCE
        steps, as ``metarl evaluate`` does (step sizes ``inner_lr``, then ``inner_lr/2``).

        Args:
            task: a task of the run's environment, e.g. ``{"velocity": 1.5}`` or
                ``{"goal": [0.3, -0.2]}`` (``env.sample_tasks`` draws some).
            steps: gradient steps (default the config's ``eval_steps``).
            episodes: episodes per step (default ``eval_episodes_per_task``).
            seed: the seed of the environment's resets and of the action noise.
        """
        from metarl.rl.evaluate import adaptation_curve
        from metarl.rl.task_envs import make_batched_env

        if self.algorithm is not None:
            raise ConfigError("adapt_policy() adapts a meta-RL run; for supervised use adapt()")
        changes = {}
        if steps is not None:
            changes["eval_steps"] = steps
        if episodes is not None:
            changes["eval_episodes_per_task"] = episodes
        config = replace(self.config, **changes)
        env = make_batched_env(config.env, config.eval_episodes_per_task, config.horizon)
        env.seed(seed)
        try:
            curve = adaptation_curve(
                self.model, env, [task], config, torch.Generator().manual_seed(seed)
            )
        except ValueError as e:  # a malformed task
            raise ConfigError(f"task {task!r}: {e}") from None
        params = [{name: p[0] for name, p in stage.items()} for stage in curve.params]
        return PolicyAdaptation(params, [float(r) for r in curve.returns[:, 0]])


def _problem(config: Any) -> Any:
    """How a supervised run's predictions are scored (its family's ``Problem``)."""
    from metarl.supervised.classification_config import ClassificationConfig

    if isinstance(config, ClassificationConfig):
        from metarl.supervised.classification_experiment import problem

        return problem(config)
    from metarl.supervised.sinusoid_experiment import PROBLEM

    return PROBLEM


def load_run(run_dir: str | Path, which: Literal["best", "last"] | None = None) -> LoadedRun:
    """A trained run's model and config, on the CPU in eval mode.

    Args:
        run_dir: the run directory.
        which: ``best`` (the best model of training, kept by meta-RL runs) or ``last``; by
            default the one ``metarl evaluate`` tests (meta-RL: the config's ``eval_model``,
            the best; supervised: the last).

    Example::

        >>> import metarl, torch
        >>> _ = metarl.train("sinusoid", {"iterations": 20}, out="runs/s20", progress=False)
        >>> run = metarl.load_run("runs/s20")
        >>> run.which, run.iteration, type(run.model).__name__
        ('last', 20, 'MLP')
        >>> run.model(torch.linspace(-5, 5, 100).unsqueeze(-1)).shape   # θ's predictions
        torch.Size([100, 1])

    Raises:
        RunError: no run there, or an unreadable one.
        ConfigError: ``which="best"`` for a run that keeps no best model.
    """
    state = load_checkpoint(run_dir)
    experiment, config = stored_config(state)
    if hasattr(config, "eval_model"):  # meta-RL
        from metarl.rl.evaluate import choose_model

        wanted = which or config.eval_model
        if wanted == "best" and state.get("best") is None:
            raise ConfigError(f"{run_dir} keeps no best model (it was trained before one was)")
        model, chosen = choose_model(replace(config, eval_model=wanted), state)
        return LoadedRun(model, config, chosen.iteration, Path(run_dir), chosen.choice, None,
                         state)  # fmt: skip
    if which == "best":
        raise ConfigError(f"{run_dir}: supervised runs keep their last model only")
    if not hasattr(config, "inner_lr"):  # ordinary training (standard-*): nothing adapts
        model = experiment.build_model(config)
        model.load_state_dict(state["model"])
        return LoadedRun(model.eval(), config, state["iteration"], Path(run_dir), "last", None,
                         state)  # fmt: skip
    from metarl.supervised.checkpoint import restore

    model, algorithm = restore(config, state, experiment.build_model(config))
    return LoadedRun(model, config, state["iteration"], Path(run_dir), "last", algorithm, state)
