"""Typed, validated experiment configs.

Every experiment family has one dataclass whose fields are declared with :func:`option`: a
default, a one-line doc, and the allowed range or choices. A config is read from a YAML file
(``metarl/configs/<experiment>.yaml``), overridden by ``--set key=value`` pairs, and validated
before any work starts; every problem is reported as one :class:`ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from metarl.core.adapt import META_GRADIENT_MODES

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_SEED = 2**31 - 1  # seeds are offset (seed + 1, + 2) and must fit every generator
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the field and what is allowed."""


def option(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    listed: Callable[[], Sequence[str]] | None = None,
) -> Any:
    """Declare a config field: ``default``, a one-line ``doc``, and its allowed values.

    ``low``/``high`` bound numbers (inclusive) and every element of a number list.
    ``listed`` gives the names a field accepts where a registry can add to them at run time
    (``metarl list`` shows them; the config's ``validate`` refuses the others).
    """
    meta = {"doc": doc, "low": low, "high": high, "choices": choices, "listed": listed}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def override(default: Any) -> Any:
    """Redeclare an inherited config field with another default (doc and bounds stay the parent's).

    A family's protocol differs from another's in its defaults, not in what a knob means::

        @dataclass
        class SinusoidConfig(SupervisedConfig):
            iterations: int = override(70_000)
    """
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"inherit": True})
    return dataclasses.field(default=default, metadata={"inherit": True})


def field_metadata(cls: type, name: str) -> typing.Mapping[str, Any]:
    """The doc and bounds of field ``name``: its own, or those of the class that declared it."""
    for klass in cls.__mro__:
        found = getattr(klass, "__dataclass_fields__", {}).get(name)
        if found is not None and not found.metadata.get("inherit"):
            return found.metadata
    raise KeyError(name)


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: doc}`` of a config dataclass."""
    return {f.name: field_metadata(cls, f.name).get("doc", "") for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints become floats where due."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option_tp in options:
            if option_tp is type(None):
                continue
            try:
                return _coerce(name, value, option_tp)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for {name}")


def _check_range(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {list(choices)}")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if meta.get("low") is not None and v < meta["low"]:
            raise ConfigError(f"{name}: {v!r} is below the minimum {meta['low']}")
        if meta.get("high") is not None and v > meta["high"]:
            raise ConfigError(f"{name}: {v!r} is above the maximum {meta['high']}")


@dataclass
class CommonConfig:
    """Fields every experiment has."""

    # What ``iterations`` counts, as messages name it; ordinary training counts epochs.
    BUDGET_UNIT: ClassVar[str] = "iterations"

    experiment: str = option("sinusoid", "experiment name (the YAML file it came from)")
    seed: int = option(0, "seed of every random generator of the run", low=0, high=MAX_SEED - 16)
    device: str = option("cpu", "torch device: cpu, cuda, cuda:1, ...")
    num_threads: int = option(
        1, "torch CPU threads; 0 keeps torch's default (small models run fastest on 1)", low=0
    )
    log_every: int = option(
        100, "iterations per metrics.jsonl line (values are window means)", low=1
    )
    checkpoint_every: int = option(1000, "iterations between checkpoints", low=1)
    checkpoint_minutes: float = option(
        10.0,
        "also checkpoint where a log window ends this many wall-clock minutes after the last "
        "checkpoint, so a killed session loses little (0: only every checkpoint_every)",
        low=0,
    )
    tensorboard: bool = option(True, "also write TensorBoard event files")

    def validate(self) -> None:
        if not _NAME.fullmatch(self.experiment) or ".." in self.experiment:
            raise ConfigError(
                f"experiment: {self.experiment!r} is not a plain name (letters, digits, '-', '_', "
                "'.'; no path separators): it names the run's directory"
            )
        if self.checkpoint_every % self.log_every != 0:
            raise ConfigError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                f"log_every ({self.log_every}) so a resumed run logs the same windows"
            )
        check_device(self.device)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before anything is created.

    Raises:
        ConfigError: not ``cpu``, ``cuda[:N]`` or ``mps``, or not available here.
    """
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"device: {device!r} is not cpu, cuda[:N] or mps")
    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} but torch finds no CUDA GPU on this machine")
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {device!r} but this machine has {torch.cuda.device_count()} GPU(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' but torch finds no Apple GPU on this machine")


@dataclass
class MetaLearningConfig(CommonConfig):
    """The knobs every meta-learning experiment shares, declared once.

    Each family (:class:`~metarl.supervised.config.SinusoidConfig`,
    :class:`~metarl.supervised.classification_config.ClassificationConfig`,
    :class:`~metarl.rl.config.RLConfig`) sets its paper's defaults with :func:`override`.
    """

    # --- meta-training -----------------------------------------------------------------------
    iterations: int = option(1000, "meta-training iterations", low=1)
    meta_batch_size: int = option(25, "tasks per meta-iteration", low=1)
    inner_lr: float = option(0.01, "inner-loop step size α", low=0.0, high=100.0)
    inner_steps: int = option(1, "inner gradient steps during meta-training", low=0)
    meta_gradient: str = option(
        "second_order",
        "how the meta-gradient crosses the inner loop: second_order (exact), first_order "
        "(first-order MAML) or finite_difference (Hessian-vector products by central differences)",
        choices=META_GRADIENT_MODES,
    )
    fd_epsilon: float = option(
        1e-2,
        "size of the perturbation of the finite-difference Hessian products (> 0); accurate "
        "with smooth activations, biased with ReLU (docs/numerics.md)",
        low=1e-12,
        high=1.0,
    )
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_tasks: int = option(600, "fixed test tasks (at least 2: the error bars need two)", low=2)
    eval_seed: int = option(
        20_170_301, "seed of the test tasks (independent of `seed`)", low=0, high=MAX_SEED - 16
    )
    eval_steps: int = option(10, "gradient steps measured at test time", low=0)
    eval_lr: float | list[float] | None = option(
        None,
        "test-time step size, or one per step (the last repeats); null: the experiment's "
        "default (a fixed inner_lr: inner_lr, then inner_lr/2 — meta-RL and sinusoid; few-shot "
        "classification and meta-learned step sizes: the meta-trained ones)",
        low=0.0,
        high=100.0,
    )

    def validate(self) -> None:
        super().validate()
        if isinstance(self.eval_lr, list) and not self.eval_lr:
            raise ConfigError("eval_lr: give at least one step size, or null")

    def warn_if_finite_differences_on_relu(self) -> None:
        """Warn when a finite-difference mode meets ReLU units, where its products are biased.

        Central differences of gradients straddle ReLU kinks: measured on the sinusoid
        meta-gradient and 2D navigation's Fisher product, no ε keeps the error below 1e-2 on
        every batch (docs/numerics.md). Called once by the trainers.
        """
        modes = {self.meta_gradient, getattr(self, "fisher_product", "")}
        if "finite_difference" in modes and getattr(self, "activation", "relu") == "relu":
            warnings.warn(
                "finite differences with ReLU units: Hessian products straddle the kinks and "
                "are biased on a share of the batches (docs/numerics.md); second_order is exact, "
                "activation=tanh keeps finite differences accurate",
                stacklevel=2,
            )


C = TypeVar("C")


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build and validate a config dataclass from a plain dict.

    Raises:
        ConfigError: an unknown key (with the closest valid one), a wrong type, or a value out
            of range; also whatever the class's own ``validate()`` rejects.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    renamed = getattr(cls, "RENAMED", {})
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in renamed and key not in fields:
            raise ConfigError(f"config key {key!r} was renamed to {renamed[key]!r}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {key!r} for {cls.__name__}.{hint} "
                f"Valid keys: {', '.join(sorted(fields))}"
            )
        coerced = _coerce(key, value, hints[key])
        _check_range(key, coerced, field_metadata(cls, key))
        kwargs[key] = coerced
    config = cls(**kwargs)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


@dataclass(frozen=True)
class FieldInfo:
    """One config key as ``metarl list EXPERIMENT`` shows it."""

    name: str
    type: str
    value: Any
    allowed: str
    doc: str


def describe(config: Any) -> list[FieldInfo]:
    """Every key of ``config``: its type, its value there, what values it allows, its doc."""
    hints = get_type_hints(type(config))
    rows = []
    for f in dataclasses.fields(config):
        meta = field_metadata(type(config), f.name)
        if meta.get("choices") is not None:
            allowed = " | ".join(str(c) for c in meta["choices"])
        elif meta.get("listed") is not None:
            allowed = " | ".join(meta["listed"]())
        elif meta.get("low") is not None and meta.get("high") is not None:
            allowed = f"{_number(meta['low'])} .. {_number(meta['high'])}"
        elif meta.get("low") is not None:
            allowed = f">= {_number(meta['low'])}"
        else:
            allowed = ""
        kind = _type_name(hints[f.name]).replace("NoneType", "null")
        rows.append(FieldInfo(f.name, kind, getattr(config, f.name), allowed, meta.get("doc", "")))
    return rows


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def upgrade(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's) with the keys renamed since it was written, and each
    key added since (``cls.ADDED``) at the value that reproduces how that run was trained."""
    renamed = getattr(cls, "RENAMED", {})
    upgraded = {renamed.get(key, key): value for key, value in values.items()}
    for key, value in getattr(cls, "ADDED", {}).items():
        upgraded.setdefault(key, value)
    return upgraded


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (for YAML, checkpoints and logs)."""
    return dataclasses.asdict(config)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[1, 2]"]`` -> ``{"a": 1, "b": [1, 2]}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with a clear error if it is missing or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML is UTF-8)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def write_yaml(path: Path, values: dict[str, Any]) -> None:
    """Write ``values`` as YAML, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(values, sort_keys=False))
    tmp.replace(path)
