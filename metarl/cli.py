"""``metarl`` command line: train, evaluate, baseline, view, check-step, analyze, list, config,
data, bench.

The process settings for speed (:func:`metarl.runtime.tune_process`) are made first thing in
:func:`main`, before anything imports torch; everything else is imported when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import metarl.commands as commands
from metarl.plugins import import_plugin

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint where ``--set``'s greed is the likely cause of a usage error."""

    _words: list[str] = []

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if "--set" in self._words and "arguments are required" in message:
            message += " (--set takes every word after it: put it last)"
        super().error(message)


def _add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE ...``: config overrides in YAML syntax, repeatable."""
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help=help
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="metarl", description="Model-Agnostic Meta-Learning: train, evaluate, benchmark."
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (or METARL_DEBUG=1)"
    )
    parser.add_argument("--version", action="version", version=f"metarl {_version()}")
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a module (a name, a .py file or a package folder) before the command: "
        "your own task environments (register_batched_env) for train, evaluate, view, "
        "check-step and baseline, your own networks (register_network) for train, evaluate "
        "and analyze; repeatable",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="meta-train an experiment into a run directory",
        description="Meta-train an experiment into a run directory. On several processes: "
        "torchrun --nproc-per-node N -m metarl train EXPERIMENT (docs/distributed.md).",
    )
    train.add_argument("experiment", help="experiment name (see `metarl list`) or a YAML file")
    where = train.add_mutually_exclusive_group()  # a resumed run stays in its own directory
    where.add_argument("--out", type=Path, help="run directory (default runs/<experiment>-<time>)")
    where.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    _add_overrides(train, "override config values (YAML syntax), e.g. --set iterations=500")
    train.add_argument("--evaluate", action="store_true", help="run `metarl evaluate` afterwards")
    train.add_argument(
        "--time-limit", type=float, metavar="MINUTES",
        help="stop after this long, at the end of a log window, with a checkpoint (--resume "
        "continues exactly)",
    )  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=commands.train_command)

    evaluate = sub.add_parser(
        "evaluate",
        help="the paper's test protocol on a trained run",
        description="Test a trained run as the paper does (the model evaluate picks, the "
        "baselines, 0..eval_steps adaptation steps); writes eval.json and plots into the run.",
    )
    evaluate.add_argument("run_dir", type=Path, help="a run directory (or a zoo/ entry)")
    _add_overrides(evaluate, "override evaluation settings, e.g. --set eval_tasks=100")
    evaluate.add_argument(
        "--retrain-baselines",
        action="store_true",
        help="train the baselines again even if stored ones match",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=commands.evaluate_command)

    baseline = sub.add_parser(
        "baseline",
        help="train a meta-RL baseline with Stable-Baselines3 PPO (picked up by `evaluate`)",
        description="pretrained: one policy for the whole task distribution, adapted at test "
        "time like MAML; oracle: a policy that sees the task. Default budgets: 1,000,000 steps "
        "(locomotion, ~10 min here), 300,000 (navigation).",
    )
    baseline.add_argument("kind", choices=["pretrained", "oracle"])
    baseline.add_argument("experiment", help="a meta-RL experiment, e.g. halfcheetah-vel")
    baseline.add_argument("--timesteps", type=int, default=None, help="PPO environment steps")
    baseline.add_argument(
        "--out", type=Path, default=None, help="directory (default runs/baselines/<experiment>)"
    )
    _add_overrides(baseline, "config overrides (seed, horizon, hidden_sizes, ...)")
    baseline.add_argument("--no-progress", action="store_true")
    baseline.set_defaults(func=commands.baseline_command)

    viewer = sub.add_parser(
        "view",
        help="render a meta-RL policy before and after 1, 2, 3 adaptation steps",
        description="MuJoCo tasks: MP4 videos (stages side by side, task and returns in the "
        "caption), rendered offscreen (MUJOCO_GL=egl by default, or osmesa). 2D navigation: "
        "a trajectory figure and an animation.",
    )
    viewer.add_argument("run_dir", type=Path)
    viewer.add_argument(
        "--tasks", type=int, nargs="+", default=None, help="test task indices (default 0 1)"
    )
    viewer.add_argument(
        "--steps", type=int, default=None, help="gradient steps (default the run's eval_steps)"
    )
    viewer.add_argument("--out", type=Path, default=None, help="output directory (the run's)")
    viewer.add_argument("--gif", action="store_true", help="also write GIFs")
    viewer.add_argument("--width", type=int, default=320, help="width of a stage's panel (pixels)")
    viewer.add_argument("--height", type=int, default=240, help="its height (pixels)")
    viewer.add_argument(
        "--interactive", action="store_true", help="replay in MuJoCo's viewer (needs a display)"
    )
    viewer.add_argument(
        "--interactive-stage",
        type=int,
        default=None,
        help="stage to replay (0 = pre-update; default 1, or 0 with --steps 0)",
    )
    viewer.add_argument("--no-progress", action="store_true")
    viewer.set_defaults(func=commands.view_command)

    check = sub.add_parser(
        "check-step",
        help="meta-RL: KL and loss along one TRPO step against the quadratic model, and "
        "whether the inner step and the meta-update carry signal or noise",
        description="Samples one meta-batch and compares, at fractions f of the trainer's "
        "natural step s, the KL reached with ½f²sᵀFs and the surrogate-loss change with "
        '−f gᵀs (docs/experiments/meta-rl.md, "Activation and the TRPO step"). Then samples '
        "every task twice and gives the cosine between the two batches' inner-loop gradients, "
        "and samples two meta-batches and gives the cosine between their meta-gradients "
        '(docs/experiments/meta-rl.md, "Does the inner step carry the task, and does the '
        'meta-update carry anything?").',
    )
    check.add_argument("target", help="a run directory, or an experiment name (untrained)")
    check.add_argument(
        "--tasks", type=int, default=None, help="tasks in the meta-batch (the config's)"
    )
    check.add_argument(
        "--episodes", type=int, default=None, help="episodes per task (the config's)"
    )
    check.add_argument("--seed", type=int, default=0, help="task and action-noise seed")
    _add_overrides(check, "config overrides of an experiment name (e.g. activation=tanh)")
    check.set_defaults(func=commands.check_step_command)

    analysis = sub.add_parser(
        "analyze",
        help="what a meta-learned network learned, beside ordinary training: figures, numbers",
        description="Filters, 2-D embeddings, activating images, saliency, activation "
        "maximisation, probes on held-out classes, CKA, what adaptation changes and the "
        "alignment of per-task gradients, into DIR/report.md (docs/analysis.md). Runs: "
        "(Fashion-)MNIST few-shot runs with network=mlp, Omniglot Conv-4 runs, and standard-* "
        "runs.",
    )
    analysis.add_argument("run", type=Path, help="a run directory")
    analysis.add_argument("--compare", type=Path, help="a second run on the same dataset")
    analysis.add_argument("--out", type=Path, required=True, help="the folder to write")
    analysis.add_argument("--points", type=int, default=2000, help="test images embedded")
    analysis.add_argument(
        "--units", type=int, nargs="+", help="units of norm3/norm4 to show (default: 4 of "
        "largest variance)",
    )  # fmt: skip
    analysis.add_argument("--tasks", type=int, default=16, help="tasks of the gradient alignment")
    analysis.add_argument(
        "--episodes", type=int, default=600, help="few-shot episodes of the centroid accuracy"
    )
    analysis.add_argument("--seed", type=int, default=0, help="every random choice")
    analysis.add_argument("--no-progress", action="store_true")
    analysis.set_defaults(func=commands.analyze_command)

    lst = sub.add_parser(
        "list", help="list the experiments; with one, every config key (value, allowed, doc)"
    )
    lst.add_argument("experiment", nargs="?", help="an experiment name or a YAML file")
    _add_overrides(lst, "show the values with these overrides")
    lst.set_defaults(func=commands.list_command)

    config = sub.add_parser(
        "config", help="print an experiment's resolved config as YAML (nothing is run)"
    )
    config.add_argument("experiment", help="an experiment name or a YAML file")
    _add_overrides(config, "override config values (YAML syntax)")
    config.set_defaults(func=commands.config_command)

    data = sub.add_parser(
        "data",
        help="list the few-shot datasets (files, sizes, checksums) or fetch one",
        description="list: each dataset's files where metarl looks for them, with their size "
        "and checksum status. fetch NAME: download from the dataset's canonical public source, "
        "verify the published checksum, and record SHA-256 sums for the loaders.",
    )
    data.add_argument("action", choices=["list", "fetch"])
    data.add_argument("name", nargs="?", help="a dataset (omniglot, mnist, fashion-mnist, ...)")
    data.add_argument(
        "--to", type=Path, default=None, help="fetch: the data root (default: the one in use)"
    )
    data.add_argument("--no-progress", action="store_true")
    data.set_defaults(func=commands.data_command)

    bench = sub.add_parser(
        "bench",
        help="the benchmark suite: quality against the paper, speed side by side",
        description="Run the benchmarks of a suite and write BENCHMARKS.md, benchmarks.json and "
        "a dated copy in docs/benchmarks/history. quick: every pipeline at a tiny budget "
        "(minutes; a smoke check that fails if a number is not finite or adaptation does not "
        "help). paper: the full protocols, hours; unfinished runs resume on the next call.",
    )
    bench.add_argument("--suite", choices=["quick", "paper"], default="quick")
    bench.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these benchmarks (see --list)"
    )
    bench.add_argument("--list", action="store_true", help="list the benchmark names and exit")
    bench.add_argument(
        "--runs-dir", type=Path, default=Path("runs/bench"), help="where the runs live"
    )
    bench.add_argument(
        "--report-dir", type=Path, default=Path("."), help="where BENCHMARKS.md is written"
    )
    bench.add_argument(
        "--time-limit", type=float, metavar="MINUTES",
        help="stop training after this long, with a checkpoint (the next call resumes)",
    )  # fmt: skip
    bench.add_argument(
        "--report-only", action="store_true", help="rewrite the report from existing runs"
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.set_defaults(func=commands.bench_command)
    return parser


INTERRUPTED = {
    "train": "the last checkpoint, if one was written, is intact; continue with `metarl train "
    "EXPERIMENT --resume RUN_DIR` (the newest runs/NAME-<time>)",
    "evaluate": "eval.json was not written (an earlier one is left as it was)",
    "baseline": "the partial model is kept; the same command continues from it",
    "view": "the videos written so far are kept; the one in progress is incomplete",
    "bench": "each run keeps its last checkpoint; the next `metarl bench` resumes",
    "analyze": "the figures written so far are kept; report.md is written last",
}
"""What an interruption means, by command (Ctrl-C and SIGTERM alike)."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt while a command runs, even when the shell that
    started it in the background told it to ignore SIGINT; the handlers before are restored."""
    try:
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metarl`` console script.

    Every expected failure is one line on stderr, ``metarl: error: ...`` (exit 2 for a bad
    config or argument, 1 otherwise); ``--debug`` or ``METARL_DEBUG=1`` also prints the
    traceback. An interruption (Ctrl-C, SIGTERM) says what it means for the command (exit 130).
    """
    from metarl.runtime import tune_process

    tune_process()  # before torch loads: OpenMP reads its settings once
    from metarl.config import ConfigError
    from metarl.reports import ReportError
    from metarl.run import RunError

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("METARL_DEBUG", "") not in ("", "0")
    # OSError: the machine's answer (disk full, permissions, a missing file), not a bug.
    expected = (ConfigError, RunError, ReportError, FloatingPointError, OSError, ImportError)
    try:
        with _signals_interrupt():
            for module in args.imports:
                import_plugin(module)
            return args.func(args)
    except BrokenPipeError:  # the reader of our output went away (`metarl list | head`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more may reach the pipe
        return 0
    except expected as e:
        if debug:
            traceback.print_exc()
        print(f"metarl: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        print(f"\nmetarl: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the user; the traceback on request
        if debug:
            raise
        print(f"metarl: error: {type(e).__name__}: {_one_line(e)} (unexpected: `metarl --debug "
              f"{args.command} …` shows where; please report it)", file=sys.stderr)  # fmt: skip
        return 1


def _interrupted(args: argparse.Namespace) -> str:
    """What an interruption means for this command; for ``train``, with the command that
    continues it when the run directory is known and holds a checkpoint."""
    if args.command != "train":
        return INTERRUPTED.get(args.command, "nothing was saved")
    from metarl.run import CHECKPOINT

    run_dir = args.resume or args.out
    settings = " (and the same --set)" if getattr(args, "set", None) else ""
    if run_dir is None:  # a new directory named at the start
        from metarl.experiments import experiment_name

        said = INTERRUPTED["train"].replace("EXPERIMENT", args.experiment)
        return said.replace("NAME", experiment_name(args.experiment)) + settings
    if not (Path(run_dir) / CHECKPOINT).is_file():
        return (f"{run_dir} holds no checkpoint yet; `metarl train {args.experiment} --out "
                f"{run_dir}`{settings} starts it again")  # fmt: skip
    return (f"the last checkpoint is intact; continue with `metarl train {args.experiment} "
            f"--resume {run_dir}`{settings}")  # fmt: skip


def _version() -> str:
    """The installed package's version (``metarl --version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metarl")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
