"""The experiment registry: names -> config class, model builder, trainer, evaluator.

An experiment is a YAML file in ``metarl/configs`` whose name starts with its family's prefix
(``omniglot-5w1s`` belongs to the few-shot classification family). Each family is imported
lazily, so ``metarl --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from metarl.config import (
    CONFIG_DIR,
    ConfigError,
    check_device,
    from_dict,
    parse_overrides,
    read_yaml,
    upgrade,
)
from metarl.reports import EvalReport

if TYPE_CHECKING:
    from metarl.algorithms import Problem

Overrides = Sequence[str] | Mapping[str, Any] | None
"""Config overrides: ``["key=value", ...]`` (``--set``) or ``{key: value}``."""
YAML_SUFFIXES = (".yaml", ".yml")
Shape = tuple[int, ...]
"""One example's shape, without a batch dimension: ``(C, H, W)``, ``(1,)``, ``()``."""


@dataclass(frozen=True)
class Experiment:
    """How to configure, build, train and evaluate one experiment family.

    Attributes:
        config_cls: the family's config dataclass.
        build_model: config -> the untrained model (its initial weights drawn from ``seed``).
        train: ``(config, run_dir, resume_state, progress, stop_at) -> trained model``;
            ``stop_at`` (a ``time.time()`` or None) ends the session early, checkpointed.
        evaluate: ``(config, run_dir, retrain_baselines, progress) -> EvalReport``; writes
            ``eval.json`` and the plots into the run directory.
        preflight: ``config -> None``; raises if the run cannot start (missing data, a
            meta-batch beyond memory), before anything is created on disk.
        io_shapes: ``config -> (input shape, target shape)`` of one example, without a batch
            dimension (a classifier's image ``(C, H, W)`` and its integer label ``()``); None
            for a policy, whose observation's size is its environment's.
        problem: ``config -> Problem``, how a supervised model's predictions are scored on a
            task; None where nothing adapts to a task's examples (meta-RL, ordinary training).
    """

    config_cls: type
    build_model: Callable[[Any], nn.Module]
    train: Callable[..., nn.Module]
    evaluate: Callable[..., EvalReport]
    preflight: Callable[[Any], None]
    io_shapes: Callable[[Any], tuple[Shape, Shape]] | None = None
    problem: Callable[[Any], Problem] | None = None


def _sinusoid() -> Experiment:
    from metarl.supervised import sinusoid_eval, sinusoid_experiment
    from metarl.supervised.config import SinusoidConfig

    return Experiment(
        SinusoidConfig,
        sinusoid_experiment.build_model,
        sinusoid_experiment.train,
        sinusoid_eval.evaluate,
        sinusoid_experiment.preflight,
        sinusoid_experiment.io_shapes,
        sinusoid_experiment.problem,
    )


def _meta_rl() -> Experiment:
    from metarl.rl import evaluate, trainer
    from metarl.rl.config import RLConfig
    from metarl.rl.policy import build_policy

    return Experiment(RLConfig, build_policy, trainer.train, evaluate.evaluate, trainer.preflight)


def _classification() -> Experiment:
    from metarl.supervised import classification_eval, classification_experiment
    from metarl.supervised.classification_config import ClassificationConfig

    return Experiment(
        ClassificationConfig,
        classification_experiment.build_model,
        classification_experiment.train,
        classification_eval.evaluate,
        classification_experiment.preflight,
        classification_experiment.io_shapes,
        classification_experiment.problem,
    )


def _standard() -> Experiment:
    from metarl.supervised import standard
    from metarl.supervised.config import StandardConfig

    return Experiment(
        StandardConfig, standard.build_model, standard.train, standard.evaluate, standard.preflight,
        standard.io_shapes,
    )  # fmt: skip


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
    "cifar10": _classification,
    # Ordinary training, the reference of `metarl analyze`.
    "standard": _standard,
}


def _family(name: str) -> str:
    """An experiment's family: its name up to the first ``-`` (``omniglot-5w1s``: omniglot)."""
    return name.split("-")[0]


def experiment_names() -> list[str]:
    """Names accepted by ``metarl train`` (one YAML file each in ``metarl/configs``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def get_experiment(name: str) -> Experiment:
    """The registry entry of ``name``, with a clear error for an unknown one."""
    family = _family(name)
    if family not in _FAMILIES:
        raise ConfigError(
            f"unknown experiment {name!r}; available: {', '.join(experiment_names())}"
        )
    return _FAMILIES[family]()


def load_config(name_or_path: str | Path, overrides: Overrides = None) -> Any:
    """The validated config of an experiment name or a YAML path, with overrides.

    Args:
        name_or_path: an experiment (``metarl list``) or a YAML file.
        overrides: ``["key=value", ...]`` (values parsed as YAML, as ``--set`` does) or a
            mapping ``{key: value}``.

    Raises:
        ConfigError: an unknown experiment or key, or a value out of range (one line).
    """
    name, path = str(name_or_path), Path(name_or_path)
    if path.suffix not in YAML_SUFFIXES:
        if name not in experiment_names():
            raise ConfigError(
                f"unknown experiment {name!r}; available: {', '.join(experiment_names())}"
            )
        path = CONFIG_DIR / f"{name}.yaml"
    values = read_yaml(path)
    values.update(as_overrides(overrides))
    if "experiment" not in values and _family(path.stem) not in _FAMILIES:
        raise ConfigError(
            f"{path}: say which experiment it configures (`experiment: sinusoid`, … as in "
            "`metarl list`)"
        )
    values.setdefault("experiment", path.stem)
    experiment = get_experiment(str(values["experiment"]))
    return from_dict(experiment.config_cls, values)


def experiment_name(name_or_path: str | Path) -> str:
    """The experiment that a name or a YAML file (its ``experiment`` key, else its stem) names."""
    path = Path(name_or_path)
    if path.suffix not in YAML_SUFFIXES:
        return str(name_or_path)
    return str(read_yaml(path).get("experiment", path.stem))


def preflight(config: Any) -> None:
    """Everything a run needs that its config alone does not show (data, memory), checked
    before a run directory is created.

    Raises:
        ConfigError: e.g. a meta-batch beyond the available memory.
        DataError: the dataset is not where it is looked for.
    """
    get_experiment(config.experiment).preflight(config)


def as_overrides(overrides: Overrides) -> dict[str, Any]:
    """``--set``-style pairs or a mapping, as ``{key: value}``."""
    if overrides is None:
        return {}
    if isinstance(overrides, str):  # a str is a sequence too: of one-letter "pairs"
        raise ConfigError(
            f"overrides {overrides!r}: give a mapping or a list of key=value, not a string"
        )
    if isinstance(overrides, Mapping):
        return dict(overrides)
    return parse_overrides(list(overrides))


def stored_experiment(state: dict[str, Any], source: str | Path = "the checkpoint") -> Experiment:
    """The registry entry of the experiment a checkpoint ``state`` names.

    Raises:
        ConfigError: an experiment this metarl does not know, named as ``source``'s.
    """
    try:
        return get_experiment(state["config"]["experiment"])
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def stored_config(
    state: dict[str, Any], overrides: Overrides = None, source: str | Path = "the checkpoint"
) -> tuple[Experiment, Any]:
    """The experiment and validated config of a checkpoint (keys renamed since are upgraded),
    with ``overrides`` (the caller decides which keys may change).

    Raises:
        ConfigError: the stored config is not valid here (an unknown experiment, a bad value,
            a device this machine lacks), named as ``source``'s; or an override is not valid.
    """
    overrides = as_overrides(overrides)
    experiment = stored_experiment(state, source)
    values = upgrade(experiment.config_cls, state["config"])
    if "device" not in overrides:
        try:
            _check_stored_device(values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    try:
        return experiment, from_dict(experiment.config_cls, {**values, **overrides})
    except ConfigError:
        # Whose error is it? What is on disk, checked alone, names the file (a device that
        # is overridden is the override's to check); else the override's error stands.
        device = {"device": "cpu"} if "device" in overrides else {}
        try:
            from_dict(experiment.config_cls, {**values, **device})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        raise


def _check_stored_device(values: dict[str, Any]) -> None:
    """Refuse, in one line that says what to do, a run that trained on a device this machine
    lacks (a run moved from a GPU machine to a CPU one)."""
    try:
        check_device(str(values.get("device", "cpu")))
    except ConfigError as e:
        raise ConfigError(
            f"{e} (the run trained there); use it here with --set device=cpu (Python: "
            "{'device': 'cpu'})"
        ) from None
