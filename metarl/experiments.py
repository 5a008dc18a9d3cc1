"""The experiment registry: names -> config class, trainer, evaluator; and ``load_run``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from metarl.config import CONFIG_DIR, ConfigError, from_dict, parse_overrides, read_yaml
from metarl.run import load_checkpoint


@dataclass(frozen=True)
class Experiment:
    """How to configure, build, train and evaluate one experiment family."""

    config_cls: type
    build_model: Callable[[Any], nn.Module]
    train: Callable[..., nn.Module]
    evaluate: Callable[..., dict[str, Any]]
    results_table: Callable[[dict[str, Any]], str]


def _sinusoid() -> Experiment:
    from metarl.supervised import sinusoid_eval, sinusoid_experiment
    from metarl.supervised.config import SinusoidConfig

    return Experiment(
        SinusoidConfig,
        sinusoid_experiment.build_model,
        sinusoid_experiment.train,
        sinusoid_eval.evaluate,
        sinusoid_eval.results_table,
    )


def _meta_rl() -> Experiment:
    from metarl.rl import evaluate, trainer
    from metarl.rl.config import RLConfig

    return Experiment(
        RLConfig, trainer.build_policy, trainer.train, evaluate.evaluate, evaluate.results_table
    )


def _classification() -> Experiment:
    from metarl.supervised import classification_eval, classification_experiment
    from metarl.supervised.classification_config import ClassificationConfig

    return Experiment(
        ClassificationConfig,
        classification_experiment.build_model,
        classification_experiment.train,
        classification_eval.evaluate,
        classification_eval.results_table,
    )


# Each entry is imported lazily so that `metarl --help` stays fast.
_FAMILIES: dict[str, Callable[[], Experiment]] = {
    "sinusoid": _sinusoid,
    "navigation": _meta_rl,
    "halfcheetah": _meta_rl,
    "ant": _meta_rl,
    # Few-shot classification; "fashion" is the prefix of fashion-mnist-*.
    "omniglot": _classification,
    "mnist": _classification,
    "fashion": _classification,
    "miniimagenet": _classification,
}


def experiment_names() -> list[str]:
    """Names accepted by ``metarl train`` (one YAML file each in ``metarl/configs``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def get_experiment(name: str) -> Experiment:
    """The registry entry of ``name``, with a clear error for an unknown one."""
    family = name.split("-")[0]
    if family not in _FAMILIES:
        raise ConfigError(
            f"unknown experiment {name!r}; available: {', '.join(experiment_names())}"
        )
    return _FAMILIES[family]()


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Any:
    """The validated config of an experiment name or a YAML path, with ``key=value`` overrides."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        if name_or_path not in experiment_names():
            raise ConfigError(
                f"unknown experiment {name_or_path!r}; available: {', '.join(experiment_names())}"
            )
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    values = read_yaml(path)
    values.setdefault("experiment", path.stem)
    values.update(parse_overrides(overrides or []))
    experiment = get_experiment(str(values["experiment"]))
    return from_dict(experiment.config_cls, values)


@dataclass
class LoadedRun:
    """A trained run, ready for one's own analysis."""

    model: nn.Module
    config: Any
    iteration: int
    run_dir: Path
    checkpoint: dict[str, Any]


def load_run(run_dir: str | Path) -> LoadedRun:
    """The trained model (on the CPU, eval mode) and config of a run directory.

    Example::

        run = metarl.load_run("runs/sinusoid-20261122-101500")
        run.model(torch.linspace(-5, 5, 100).unsqueeze(-1))
    """
    state = load_checkpoint(run_dir)
    experiment = get_experiment(state["config"]["experiment"])
    config = from_dict(experiment.config_cls, state["config"])
    model = experiment.build_model(config)
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(model, config, state["iteration"], Path(run_dir), state)
