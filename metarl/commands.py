"""What each ``metarl`` subcommand does: one function per command, ``args -> exit code``.

The parser and the error handling around them are :mod:`metarl.cli`'s. Each function imports
what its command needs when it runs, so that ``metarl --help`` stays instant.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.reports import EvalReport


def train_command(args: argparse.Namespace) -> int:
    from metarl.api import train
    from metarl.budget import progress_line, short_of_budget
    from metarl.run import load_checkpoint

    result = train(
        args.experiment, args.set, out=args.out, resume=args.resume, evaluate=args.evaluate,
        progress=not args.no_progress, time_limit=args.time_limit,
    )  # fmt: skip
    run_dir, config = result.run_dir, result.config
    if not result.main:  # another process of a distributed run: rank 0 reports
        return 0
    state = load_checkpoint(run_dir)
    print(_training_summary(state, run_dir, config))
    unfinished = progress_line(state, config) if short_of_budget(state, config) else None
    cut_short = args.time_limit is not None and unfinished is not None
    imports = getattr(args, "imports", [])  # what the next command needs again
    metarl = " ".join(["metarl", *(f"--import {m}" for m in imports)])
    if cut_short:
        print(f"the time limit ended this session; continue: {metarl} train {args.experiment} "
              f"--resume {run_dir}")  # fmt: skip
    if result.report is not None:
        _print_results(result.report, run_dir, unfinished)
    elif not cut_short:
        print(f"next: {metarl} evaluate {run_dir}" + (
            f"   (and: {metarl} view {run_dir})" if hasattr(config, "env") else ""))  # fmt: skip
    return 0


def _training_summary(state: dict[str, Any], run_dir: Path, config: Any) -> str:
    """One line: iterations, wall time, speed and the last logged values."""
    from metarl.run import read_metrics

    seconds = float(state.get("elapsed", 0.0))
    last = read_metrics(run_dir)[-1] if read_metrics(run_dir) else {}
    prefixes = ("meta/", "returns/", "train/", "test/", "val/")
    shown = [k for k in last if k.startswith(prefixes) and isinstance(last[k], float)]
    values = ", ".join(f"{k} {last[k]:.4g}" for k in shown[:4])
    unit = getattr(config, "BUDGET_UNIT", "iterations")
    speed = f", {seconds / state['iteration']:.3g} s per {unit[:-1]}" if seconds > 0 else ""
    if unit == "iterations" and seconds > 0:
        speed = f", {state['iteration'] / seconds:.3g} it/s"
    return (f"trained {state['iteration']:,} of {config.iterations:,} {unit} in "
            f"{_duration(seconds)}{speed}; last log: {values or '-'}")  # fmt: skip


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def evaluate_command(args: argparse.Namespace) -> int:
    from metarl.api import evaluate_run

    done = evaluate_run(args.run_dir, args.set, args.retrain_baselines, not args.no_progress)
    _print_results(done.report, done.run_dir, done.progress if done.unfinished else None)
    return 0


def _print_results(report: EvalReport, run_dir: Path, unfinished: str | None) -> None:
    """The evaluation's table, for meta-RL the gap it closes, and where the report went
    (``unfinished``: how far a run short of its budget got, else None)."""
    from metarl.gap import gap_share
    from metarl.results_table import results_table

    print(_caption(report, unfinished))
    print(results_table(report))
    if (share := gap_share(report)) is not None:
        print(share.line())
    print(f"wrote {run_dir / 'eval.json'} and {run_dir / 'plots'}/")


def _caption(report: EvalReport, unfinished: str | None) -> str:
    """What the table measures: the metric, over how many test tasks, what ± is, and which
    model, with a warning for a run short of its budget: ``unfinished`` says how far it got
    (:func:`metarl.budget.progress_line`), None for a finished run."""
    bar = {"ci95": "the 95% interval", "stderr": "one standard error"}[report.error_bar]
    if "test_images" in report.protocol:  # ordinary training: one test set, no tasks
        over = f" on {report.protocol['test_images']:,} test images, ± {bar}"
    else:
        over = f", mean over {report.config.get('eval_tasks')} test tasks, ± {bar} of the mean"
    text = f"{report.experiment}: {report.metric}{over}; {report.model}"
    if unfinished is not None:
        text += f" (the run is not finished: {unfinished})"
    return text


def baseline_command(args: argparse.Namespace) -> int:
    from metarl.config import ConfigError
    from metarl.experiments import load_config
    from metarl.rl.config import RLConfig
    from metarl.rl.sb3_baselines import train_baseline

    config = load_config(args.experiment, args.set)
    if not isinstance(config, RLConfig):
        raise ConfigError(
            f"{config.experiment}: `metarl baseline` trains meta-RL baselines; the supervised "
            "experiments train theirs inside `metarl evaluate`"
        )
    out = args.out if args.out is not None else Path("runs") / "baselines" / config.experiment
    path = train_baseline(config, args.kind, out, args.timesteps, progress=not args.no_progress)
    print(f"wrote {path}")
    return 0


def view_command(args: argparse.Namespace) -> int:
    import os

    # MuJoCo picks its OpenGL backend when it is first imported: offscreen EGL unless told.
    os.environ.setdefault("MUJOCO_GL", "egl")
    import dataclasses

    from metarl.config import ConfigError
    from metarl.experiments import stored_config
    from metarl.rl.config import RLConfig
    from metarl.rl.evaluate import choose_model
    from metarl.rl.view import view
    from metarl.run import CHECKPOINT, load_checkpoint

    for flag, pixels in (("--width", args.width), ("--height", args.height)):
        if not 16 <= pixels <= 4096:
            raise ConfigError(f"{flag} {pixels}: give 16 to 4096 pixels per stage panel")
    state = load_checkpoint(args.run_dir)
    # the policy rolls out on the CPU
    _, config = stored_config(state, {"device": "cpu"}, Path(args.run_dir) / CHECKPOINT)
    if not isinstance(config, RLConfig):
        raise ConfigError(f"{args.run_dir}: `metarl view` shows meta-RL policies")
    if args.steps is not None:
        if args.steps < 0:
            raise ConfigError(f"--steps must be at least 0, got {args.steps}")
        config = dataclasses.replace(config, eval_steps=args.steps)
    stage = args.interactive_stage
    if stage is not None and not args.interactive:
        raise ConfigError("--interactive-stage picks what --interactive replays: add --interactive")
    if stage is not None and not 0 <= stage <= config.eval_steps:
        raise ConfigError(
            f"--interactive-stage {stage}: the stages are 0 (before adaptation) to "
            f"{config.eval_steps} (after {config.eval_steps} steps)"
        )
    if stage is None:
        stage = min(1, config.eval_steps)
    policy, _ = choose_model(config, state)  # the model `metarl evaluate` tests
    written = view(
        policy, config, args.out or args.run_dir, args.tasks, args.gif, args.width, args.height,
        stage if args.interactive else None, progress=not args.no_progress,
    )  # fmt: skip
    for path in written:
        print(f"wrote {path}")
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    from metarl.analysis.report import analyze
    from metarl.config import ConfigError

    # t-SNE's perplexity of 30 needs more points; a spread needs two tasks and two episodes.
    for flag, value, least in (("--points", args.points, 40), ("--tasks", args.tasks, 2),
                               ("--episodes", args.episodes, 2)):  # fmt: skip
        if value < least:
            raise ConfigError(f"{flag} {value}: give at least {least}")
    if args.units is not None and min(args.units) < 0:
        raise ConfigError(f"--units {min(args.units)}: unit indices start at 0")
    analyze(args.run, args.compare, args.out, points=args.points, units=args.units,
            tasks=args.tasks, episodes=args.episodes, seed=args.seed,
            progress=not args.no_progress)  # fmt: skip
    print(f"wrote {Path(args.out) / 'report.md'} (figures and numbers.json beside it)")
    return 0


def check_step_command(args: argparse.Namespace) -> int:
    from metarl.config import ConfigError
    from metarl.experiments import YAML_SUFFIXES, load_config
    from metarl.rl.config import RLConfig
    from metarl.rl.diagnostics import (
        check_gradient_agreement,
        check_meta_gradient_agreement,
        check_natural_step,
        format_gradient_agreement,
        format_meta_gradient_agreement,
        format_step_profile,
    )
    from metarl.rl.policy import build_policy
    from metarl.run import RunError
    from metarl.runtime import set_num_threads
    from metarl.trained import load_run

    target = Path(args.target)
    looks_like_a_path = target.exists() or "/" in args.target
    if looks_like_a_path and not target.exists() and target.suffix not in YAML_SUFFIXES:
        raise RunError(f"run directory not found: {args.target}")  # as the other commands say
    if looks_like_a_path and not target.is_dir() and target.suffix not in YAML_SUFFIXES:
        raise ConfigError(f"{args.target}: not a run directory, a YAML file or an experiment")
    if target.is_dir():
        if args.set:
            raise ConfigError("--set applies to an experiment name, not to a trained run")
        run = load_run(args.target)
        config, policy = run.config, run.model
        what = f"{args.target}, iteration {run.iteration}"
    else:
        config = load_config(args.target, args.set)
        policy = None
        what = f"{config.experiment}, untrained policy"
    if not isinstance(config, RLConfig):
        raise ConfigError(f"{config.experiment}: check-step measures the meta-RL TRPO step")
    for name in ("tasks", "episodes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}")
    tasks = config.meta_batch_size if args.tasks is None else args.tasks
    episodes = config.episodes_per_task if args.episodes is None else args.episodes
    policy = policy if policy is not None else build_policy(config)
    set_num_threads(config.num_threads)
    points = check_natural_step(policy, config, tasks, episodes, args.seed)
    sigma = ", ".join(f"{s:.2f}" for s in policy.log_std.detach().exp().tolist())
    print(f"{what}: {config.activation} {config.hidden_sizes}, σ = [{sigma}], {tasks} tasks x "
          f"{episodes} episodes, fisher_product {config.fisher_product}, "
          f"max_kl {config.max_kl}")  # fmt: skip
    print(format_step_profile(points))
    agreement = check_gradient_agreement(policy, config, tasks, episodes, args.seed)
    print(format_gradient_agreement(agreement))
    meta = check_meta_gradient_agreement(policy, config, tasks, episodes, args.seed)
    print(format_meta_gradient_agreement(meta))
    return 0


def list_command(args: argparse.Namespace) -> int:
    from metarl.config import CONFIG_DIR, describe
    from metarl.experiments import YAML_SUFFIXES, experiment_names, load_config

    if args.experiment is None:
        width = max(len(n) for n in experiment_names())
        for name in experiment_names():
            summary = _summary(CONFIG_DIR / f"{name}.yaml")
            if len(summary) > 100:  # one line each; `metarl list NAME` shows it whole
                summary = summary[:100].rsplit(" ", 1)[0] + " …"
            print(f"{name:{width}s}  {summary}")
        print(
            "\n`metarl list EXPERIMENT` shows every config key with its value and allowed values."
        )
        return 0
    config = load_config(args.experiment, args.set)
    rows = describe(config)
    source = Path(args.experiment)
    if source.suffix not in YAML_SUFFIXES:
        source = CONFIG_DIR / f"{args.experiment}.yaml"
    print(f"{args.experiment}: {_summary(source)}")
    widths = [max(len(str(getattr(r, k))) for r in rows) for k in ("name", "type", "value")]
    for r in rows:
        cells = [f"{str(getattr(r, k)):{w}s}" for k, w in zip(("name", "type", "value"), widths)]
        print("  " + "  ".join(cells) + f"  {r.allowed or '-'}  {r.doc}")
    return 0


def _summary(yaml_path: Path) -> str:
    """What an experiment is, from its YAML's opening comment: up to the first colon or the
    end of the first sentence ("et al. 2017", "Sec. 5.1" and "App. A" do not end one)."""
    lines = yaml_path.read_text(errors="replace").splitlines()
    comment = " ".join(line.lstrip("# ").rstrip() for line in _leading_comment(lines))
    return re.split(r": |(?<!App)(?<!Sec)\.(?= [A-Z]|$)", comment, maxsplit=1)[0]


def _leading_comment(lines: list[str]) -> list[str]:
    """The leading comment block (the lines before the first one that is not a comment)."""
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(line)
    return block


def config_command(args: argparse.Namespace) -> int:
    import yaml

    from metarl.config import to_dict
    from metarl.experiments import load_config

    config = load_config(args.experiment, args.set)
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


def data_command(args: argparse.Namespace) -> int:
    from metarl.config import ConfigError
    from metarl.supervised.data.fetch import SOURCES, fetch, status
    from metarl.supervised.data.files import DataError, dataset_dir, resolve_data_dir

    if args.name is not None and args.name not in SOURCES:
        raise ConfigError(f"unknown dataset {args.name!r}; one of {', '.join(SOURCES)}")
    if args.action == "fetch":
        if args.name is None:
            raise ConfigError(f"which dataset? `metarl data fetch NAME`, NAME one of "
                              f"{', '.join(SOURCES)}")  # fmt: skip
        target = args.to if args.to is not None else resolve_data_dir(None)[0]
        paths = fetch(args.name, target, progress=not args.no_progress)
        print(f"{args.name}: {len(paths)} file(s) verified in {paths[0].parent}")
        if args.to is not None:
            print(f"use it with --set data_dir={args.to} (or METARL_DATA={args.to})")
        return 0
    root, origin = resolve_data_dir(None)
    print(f"data root: {root} (from {origin})")
    from metarl.supervised.data.mnist import FALLBACK_DIRS

    for name, source in SOURCES.items():
        if args.name not in (None, name):
            continue
        try:
            folder: Path | None = dataset_dir(None, name, FALLBACK_DIRS.get(name, ()))
        except DataError:
            folder = None
        print(f"\n{name}: {source.description}")
        print(f"  folder: {folder or 'not found'}")
        for row in status(name, folder):
            size = "-" if row.bytes is None else _size(row.bytes)
            print(f"  {row.name:30s} {size:>10s}  {row.status}")
        if source.note:
            print(f"  note: {source.note}")
        if folder is None and source.files:
            print(f"  get it: metarl data fetch {name} --to {root}")
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def bench_command(args: argparse.Namespace) -> int:
    from metarl.benchmarks.suite import benchmark_names, run_suite

    if args.list:
        print("\n".join(benchmark_names()))
        return 0
    return run_suite(
        args.suite, args.only, args.runs_dir, args.report_dir, args.time_limit,
        report_only=args.report_only, progress=not args.no_progress,
    )  # fmt: skip
