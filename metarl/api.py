"""The Python API: train and evaluate experiments (:mod:`metarl.trained` loads trained runs).

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

For meta-RL, :meth:`~metarl.trained.LoadedRun.adapt_policy` adapts the policy to a task by
sampling episodes, and :meth:`~metarl.rl.policy.GaussianMLPPolicy.act` acts with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import shlex
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from metarl.budget import progress_line, short_of_budget
from metarl.config import ConfigError, read_yaml, to_dict, write_yaml
from metarl.distributed import close_world, init_world
from metarl.experiments import (
    Overrides,
    as_overrides,
    experiment_name,
    get_experiment,
    load_config,
    preflight,
    stored_config,
    stored_experiment,
)
from metarl.loop import session_deadline
from metarl.reports import EvalReport
from metarl.run import (
    CHECKPOINT,
    CONFIG,
    RunError,
    atomic_torch_save,
    default_baselines_dir,
    default_run_dir,
    load_checkpoint,
    log_evaluation,
    prepare_new_run_dir,
    remove_unstarted,
    run_lock,
    zoo_root,
)

RESUME_OVERRIDES = ("iterations", "num_threads", "checkpoint_minutes", "time_budget", "device")
"""Config keys a resumed run may change: the budget, how the run uses the machine and how often
it saves (none of them changes what it trains; another device only rounds floats differently)."""
EVALUATION_KEYS = (
    "num_threads", "device", "baselines_dir", "baseline_iterations", "baseline_lr",
    "pretrained_finetune_lrs",
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
    experiment: str | Path,
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
        experiment: an experiment name (``metarl list``) or a YAML file; with ``resume``, the
            run's own (a check that the right run is continued).
        overrides: config overrides, ``{"iterations": 500}`` or ``["iterations=500"]``; with
            ``resume`` only :data:`RESUME_OVERRIDES` may change (``device``: a run trained on
            a GPU continues on a machine without one).
        out: the run directory (default ``runs/<experiment>-<time>``).
        resume: a run directory to continue instead of ``out``; also with another number of
            processes than the run started with.
        evaluate: run the paper's evaluation afterwards (``metarl evaluate``), unless the time
            limit ended the session before the budget.
        progress: progress bars.
        time_limit: minutes of this session: training stops at the first end of a
            ``log_every`` window after them and checkpoints there; ``resume`` continues it
            exactly. None: train to ``iterations``.

    Raises:
        ConfigError: a bad config (before anything is written).
        DataError: the dataset is missing (a ``FileNotFoundError``, before anything is
            written).
        RunError: the run directory is in use, holds another run, cannot be read or written,
            or (``resume``) is an entry of a committed zoo: the message says how to copy it.
    """
    stop_at = session_deadline(time_limit)
    if resume is not None and out is not None:
        raise ConfigError("give out or resume, not both: a resumed run stays in its directory")
    if resume is not None:
        run_dir = Path(resume)
        experiment = experiment_name(experiment)
        state = load_checkpoint(run_dir, experiment=experiment)  # a clear error before locking
        if zoo_root(run_dir) is not None:
            hint = _copy_hint(run_dir, experiment)
            raise RunError(f"{run_dir} is a committed zoo entry: {hint}")
        config = resumed_config(state, overrides, run_dir / CHECKPOINT)
    else:
        config = load_config(experiment, overrides)
        preflight(config)  # data, memory: everything is checked before a directory exists
        run_dir = Path(out) if out is not None else default_run_dir(config.experiment)
    world = init_world(config.device)
    main = world is None or world.is_main
    try:  # a refusal leaves the process group too
        if world is not None:
            if not hasattr(config, "meta_batch_size"):
                raise ConfigError(f"{config.experiment} (ordinary training) runs on one process")
            world.shard(config.meta_batch_size)  # refuses more processes than tasks, up front
            if time_limit is not None:  # each process's clock would stop it at another iteration
                raise ConfigError("time limit: a run under torchrun stops by iterations or Ctrl-C")
        if resume is not None and main:
            _note_edited_record(run_dir, state)
        made_here = resume is None and main and not run_dir.exists()
        with run_lock(run_dir, f"metarl train {experiment}") if main else nullcontext():
            try:
                report = _train_session(config, run_dir, resume, world, evaluate, progress, stop_at)
            except Exception:  # a failed start (an interruption keeps its folder, as said)
                # Under the lock: a directory this call made, never one another process holds.
                if made_here:
                    remove_unstarted(run_dir)
                raise
    finally:
        if world is not None:
            close_world()
    return Training(run_dir, config, report, main)


def _train_session(
    config: Any,
    run_dir: Path,
    resume: str | Path | None,
    world: Any,
    evaluate: bool,
    progress: bool,
    stop_at: float | None,
) -> EvalReport | None:
    """One session of `train` on a locked run directory: start or continue the run, train until
    the budget or the session's deadline, and evaluate if asked; returns the evaluation."""
    main = world is None or world.is_main
    state = None
    if resume is not None:
        state = load_checkpoint(run_dir, experiment=config.experiment)
        if state["iteration"] == config.iterations:
            if main:
                _declare_finished(run_dir, state, config)
            return _evaluate(config, run_dir, progress) if evaluate and main else None
    elif main:
        prepare_new_run_dir(run_dir)
    if main:
        write_yaml(run_dir / CONFIG, to_dict(config))
        if progress:
            print(f"run directory: {run_dir}")
    get_experiment(config.experiment).train(
        config, run_dir, state, progress=progress and main, stop_at=stop_at
    )
    if world is not None:  # the evaluation is rank 0's alone: the others may leave
        close_world(finished=True)
    # a session that the time limit ended is not the trained model `evaluate` asked for
    cut_short = stop_at is not None and short_of_budget(load_checkpoint(run_dir), config)
    return _evaluate(config, run_dir, progress) if evaluate and main and not cut_short else None


def _declare_finished(run_dir: Path, state: dict[str, Any], config: Any) -> None:
    """A run already at its budget: say so, and record a changed budget in the checkpoint (a
    longer run stopped early and declared finished here: the checkpoint's own budget is what
    `metarl bench` reads to decide whether to resume)."""
    unit = getattr(config, "BUDGET_UNIT", "iterations")
    print(f"{run_dir} finished {state['iteration']} {unit}", file=sys.stderr)
    if state["config"] != to_dict(config):
        state["config"] = to_dict(config)
        atomic_torch_save(state, run_dir / CHECKPOINT)
        write_yaml(run_dir / CONFIG, state["config"])


def _evaluate(config: Any, run_dir: Path, progress: bool, retrain: bool = False) -> EvalReport:
    experiment = get_experiment(config.experiment)
    report = experiment.evaluate(config, run_dir, retrain_baselines=retrain, progress=progress)
    log_evaluation(run_dir, report)
    return report


def _copy_hint(entry: Path, experiment: str) -> str:
    """The commands that copy a zoo entry to ``runs/`` to continue it there (meta-RL: with the
    zoo's baselines, where `evaluate` then looks for them)."""
    copy = f"runs/{entry.resolve().name}"
    hint = f"continue a copy of it (mkdir -p runs && cp -r {shlex.quote(str(entry))} "
    hint += shlex.quote(copy)
    if (baselines_dir := default_baselines_dir(entry, experiment)).is_dir():
        baselines = shlex.quote(str(baselines_dir))
        hint += f" && mkdir -p runs/baselines && cp -r {baselines} runs/baselines/"
    return hint + f"; then --resume {shlex.quote(copy)})"


def evaluation_dir(run_dir: str | Path) -> Path:
    """Where `evaluate` writes its report for ``run_dir``: the run itself, or for an entry of
    a committed zoo its copy ``runs/zoo/<entry's path in the zoo>``."""
    run_dir = Path(run_dir)
    return _evaluation_dir(run_dir, zoo_root(run_dir))


def _evaluation_dir(run_dir: Path, zoo: Path | None) -> Path:
    return run_dir if zoo is None else Path("runs") / "zoo" / run_dir.resolve().relative_to(zoo)


def _copy_zoo_entry(entry: Path, copy: Path) -> None:
    """Refresh ``copy`` with the committed files of zoo ``entry`` (its eval.json included: a
    meta-RL evaluation reuses the baselines' scores it holds)."""
    for file in entry.iterdir():
        if file.is_file() and not file.name.startswith("."):
            shutil.copy2(file, copy / file.name)


def _note_edited_record(run_dir: Path, state: dict[str, Any]) -> None:
    """Say so when a run's ``config.yaml`` no longer matches its checkpoint: an edit there
    changes nothing (the checkpoint's config is the run's; config.yaml is its record)."""
    path = run_dir / CONFIG
    if not path.is_file():
        return

    def settings(config: dict[str, Any]) -> dict[str, Any]:  # what a resume cannot change
        return {k: v for k, v in config.items() if k not in RESUME_OVERRIDES}

    try:  # a resume writes the record at once, the checkpoint at its first save
        edited = settings(read_yaml(path)) != settings(state["config"])
    except ConfigError:
        edited = True
    if edited:
        print(
            f"metarl: note: {path} differs from the config in {CHECKPOINT}, which is the run's "
            "(config.yaml is only its record; settings change with --set)",
            file=sys.stderr,
        )


def resumed_config(
    state: dict[str, Any], overrides: Overrides, source: str | Path = "the checkpoint"
) -> Any:
    """A checkpoint's config with the overrides a resumed run accepts (``source`` names the
    checkpoint in errors).

    Raises:
        ConfigError: another key is overridden, or the run would be shortened.
    """
    overrides = as_overrides(overrides)
    for key in overrides:
        if key not in RESUME_OVERRIDES:
            raise ConfigError(
                f"--set {key}: a resumed run keeps its config; only "
                f"{', '.join(f'`{k}`' for k in RESUME_OVERRIDES[:-1])} and "
                f"`{RESUME_OVERRIDES[-1]}` may change"
            )
    _, config = stored_config(state, overrides, source)
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

    A run in a committed model zoo (:func:`metarl.run.zoo_root`) stays as committed: it is
    copied to :func:`evaluation_dir` and evaluated there, with the zoo's baselines (meta-RL).

    Args:
        run_dir: the run.
        overrides: evaluation settings only (``eval_*``, ``num_threads``, ``device``,
            baselines).
        retrain_baselines: train the baselines again even if stored ones match.
        progress: progress bars.

    Raises:
        ConfigError: an override of a key that changes the trained model, not its test; or
            a stored config that is not valid here (named as the checkpoint's).
        RunError: no run there, an unreadable one, or one in use.
    """
    return evaluate_run(run_dir, overrides, retrain_baselines, progress).report


class Evaluation(NamedTuple):
    """An evaluation, with what ``metarl evaluate`` says around its table.

    Attributes:
        report: the evaluation (:func:`evaluate`'s answer).
        run_dir: where ``eval.json`` and the plots were written (:func:`evaluation_dir`).
        unfinished: the run is short of its budget (:func:`metarl.budget.short_of_budget`).
        progress: how far its training got, in the budget's unit
            (:func:`metarl.budget.progress_line`).
    """

    report: EvalReport
    run_dir: Path
    unfinished: bool
    progress: str


def evaluate_run(
    run_dir: str | Path,
    overrides: Overrides = None,
    retrain_baselines: bool = False,
    progress: bool = True,
) -> Evaluation:
    """:func:`evaluate`, also saying where the report went and whether the run is unfinished
    (from the checkpoint it already read), as ``metarl evaluate`` prints them.

    Args:
        run_dir: the run.
        overrides: evaluation settings only, as for :func:`evaluate`.
        retrain_baselines: train the baselines again even if stored ones match.
        progress: progress bars.

    Raises:
        ConfigError: as :func:`evaluate`.
        RunError: as :func:`evaluate`.
    """
    run_dir = Path(run_dir)
    overrides = as_overrides(overrides)
    state = load_checkpoint(run_dir)
    experiment = stored_experiment(state, run_dir / CHECKPOINT)
    keys = [f.name for f in dataclasses.fields(experiment.config_cls)]
    allowed = sorted(k for k in keys if k.startswith("eval_") or k in EVALUATION_KEYS)
    renamed = getattr(experiment.config_cls, "RENAMED", {})
    for key in overrides:
        if key in renamed:
            raise ConfigError(f"config key {key!r} was renamed to {renamed[key]!r}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"--set {key}: {hint}`metarl evaluate` tests the trained model as it was "
                f"trained; it may change the evaluation's own keys: {', '.join(allowed)}"
            )
    entry, zoo = run_dir, zoo_root(run_dir)
    run_dir = _evaluation_dir(entry, zoo)
    if zoo is not None:  # the zoo stays as committed: evaluate a copy, beside its baselines
        name = state["config"]["experiment"]
        if "baselines_dir" in state["config"] and "baselines_dir" not in overrides:
            overrides["baselines_dir"] = str(default_baselines_dir(entry, name))
        print(f"{entry} is a committed zoo entry: evaluating a copy of it, {run_dir} "
              f"(the committed result: {entry / 'eval.json'})", file=sys.stderr)  # fmt: skip
    _, config = stored_config(state, overrides, entry / CHECKPOINT)
    _note_edited_record(entry, state)  # after the config is known good: one problem at a time
    with run_lock(run_dir, "metarl evaluate"):
        if zoo is not None:
            _copy_zoo_entry(entry, run_dir)
        report = _evaluate(config, run_dir, progress, retrain_baselines)
    return Evaluation(report, run_dir, short_of_budget(state, config), progress_line(state, config))
