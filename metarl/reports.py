"""Typed evaluation reports: what ``metarl evaluate`` writes as ``eval.json``, and how to read it.

Everything downstream (the results table, the plots, the benchmark suite, the README generator)
reads an :class:`EvalReport` through :func:`read_report`; nothing parses messages or display
labels. Methods are identified by stable ids (:class:`Curve.method`), the number a benchmark
judges is named by the evaluator itself (:class:`Headline`), and a report of an older schema is
refused with one line that says how to get a current one.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

SCHEMA_VERSION = 2
EVAL_REPORT = "eval.json"
GROWTH = 10.0
"""A test task whose loss after adaptation exceeds this many times its loss before is counted
as diverged (:attr:`Curve.grew`)."""

ErrorBar = Literal["ci95", "stderr"]
ERROR_BAR_SCALE: dict[str, float] = {"ci95": 1.96, "stderr": 1.0}
"""An error bar in standard errors: the normal 95% interval's half-width is 1.96 of them."""


class ReportError(ValueError):
    """An ``eval.json`` that cannot be used (missing, of an older schema, or malformed)."""


@dataclass(frozen=True)
class Curve:
    """One method's score along test-time adaptation.

    Attributes:
        method: stable id that readers key on: ``meta_learned`` (the trained model),
            ``pretrained``, ``random_init``, ``oracle_analytic``, ``oracle_ppo``,
            ``oracle_ppo_mean_action``, ``standard_training``, ``nil`` (ANIL's head-free variant).
        label: the name shown in tables and plots.
        steps: gradient steps ``(S,)``; a method that does not adapt has the single step 0.
        mean: the score after each step, mean over test tasks ``(S,)``.
        error: its error bar ``(S,)`` (the report's ``error_bar``); empty for a published
            number without one.
        setting: what varies besides the method (sinusoid: ``"K=5"``); empty otherwise.
        median: the median over test tasks after each step (a mean can be one task's).
        grew: for a loss, the number of test tasks whose loss after each step is more than
            :data:`GROWTH` times its loss before adaptation, or not finite (adaptation that
            diverged); empty when not counted.
        per_task: each test task's score after each step ``(S, n_tasks)``, kept where methods
            are compared task by task (meta-RL's 40 tasks: :func:`metarl.gap.gap_share`);
            empty otherwise.
    """

    method: str
    label: str
    steps: list[int]
    mean: list[float]
    error: list[float] = field(default_factory=list)
    setting: str = ""
    median: list[float] = field(default_factory=list)
    grew: list[int] = field(default_factory=list)
    per_task: list[list[float]] = field(default_factory=list)

    def _index(self, step: int) -> int | None:
        """Where ``step`` is in :attr:`steps`; a method without adaptation (one step) answers
        every step."""
        if len(self.steps) == 1:
            return 0
        return self.steps.index(step) if step in self.steps else None

    def at(self, step: int) -> tuple[float, float | None]:
        """``(mean, error)`` after ``step`` steps; a method without adaptation gives its one
        value at every step. Raises KeyError if the step was not measured."""
        if (i := self._index(step)) is None:
            raise KeyError(f"{self.label}: no value after {step} steps")
        return self.mean[i], (self.error[i] if self.error else None)

    def tasks_at(self, step: int) -> list[float] | None:
        """Each test task's score after ``step`` steps (as :meth:`at`), or None if not kept."""
        i = self._index(step)
        return None if i is None or not self.per_task else self.per_task[i]

    @classmethod
    def from_samples(
        cls,
        method: str,
        label: str,
        values: Tensor,
        error_bar: ErrorBar,
        steps: list[int] | None = None,
        setting: str = "",
        count_growth: bool = False,
        keep_per_task: bool = False,
    ) -> Curve:
        """Mean, error bar and median over tasks of ``values (S, n_tasks)`` (row s after
        step s); with ``count_growth`` (a loss), also how many tasks' loss grew past
        :data:`GROWTH` times its value before adaptation; with ``keep_per_task``, the values.

        ``ci95`` is the half-width of the normal 95% confidence interval of the mean,
        ``1.96 · std / √n``; ``stderr`` the standard error ``std / √n`` (std with ddof 1).
        """
        values = values.double()
        n = values.shape[-1]
        mean = values.mean(dim=-1)
        std = values.std(dim=-1) if n > 1 else mean * 0.0
        scale = ERROR_BAR_SCALE[error_bar]
        steps = list(range(values.shape[0])) if steps is None else steps
        grew: list[int] = []
        if count_growth:
            blown = (values > GROWTH * values[:1]) | ~torch.isfinite(values)
            grew = [int(c) for c in blown.sum(dim=-1)]
        # A task whose loss overflowed to NaN counts as +inf: the median stays the median.
        ranked = torch.where(torch.isnan(values), torch.inf, values)
        median = torch.quantile(ranked, 0.5, dim=-1).tolist()
        per_task = values.tolist() if keep_per_task else []
        return cls(method, label, steps, mean.tolist(), (scale * std / n**0.5).tolist(), setting,
                   median, grew, per_task)  # fmt: skip


@dataclass(frozen=True)
class Headline:
    """The number a benchmark judges an evaluation by: ``method``'s score after ``step`` steps
    (in ``setting``), described as ``label`` (e.g. ``"return after 1 step"``)."""

    label: str
    method: str
    step: int
    setting: str = ""


@dataclass(frozen=True)
class ModelChoice:
    """Which trained model was evaluated.

    Attributes:
        choice: ``best`` (meta-RL: the best of training, the paper's protocol; few-shot: the
            best-validated, a deviation) or ``last``.
        iteration: that model's meta-iteration.
        checkpoint_iteration: the run's iteration when it was evaluated.
        training_return: meta-RL ``best``: the training return it was chosen by.
        note: why the choice differs from the one asked for, if it does.
        validation_accuracy: few-shot ``best``: the validation accuracy it was chosen by.
    """

    choice: Literal["best", "last"]
    iteration: int
    checkpoint_iteration: int
    training_return: float | None = None
    note: str = ""
    validation_accuracy: float | None = None

    def __str__(self) -> str:
        """``"the best model of training, from iteration 412"``, ``"the best-validated model,
        from iteration 15000 (validation accuracy 93.85%)"`` or ``"the last model, iteration
        500"``, with the note after a semicolon."""
        if self.choice == "last":
            text = f"the last model, iteration {self.iteration}"
        elif self.validation_accuracy is None:
            text = f"the best model of training, from iteration {self.iteration}"
        else:
            text = (f"the best-validated model, from iteration {self.iteration} (validation "
                    f"accuracy {100 * self.validation_accuracy:.2f}%)")  # fmt: skip
        return f"{text}; {self.note}" if self.note else text


def select_model(state: dict[str, Any], eval_model: str) -> tuple[dict[str, Any], ModelChoice]:
    """The part of a checkpoint ``state`` that holds the model ``eval_model`` names, and that
    choice: ``state`` itself for ``last``; for ``best`` the best model the trainer kept,
    ``state["best"]`` (its ``"model"``, and few-shot its ``"algorithm"``).

    A checkpoint without a best model (written before one was kept, or few-shot without
    validations) falls back to the last and says so; a few-shot best kept only from a resume
    onwards (``"since"`` > 0) says that the validations before it were not considered.
    """
    iteration, best = state["iteration"], state.get("best")
    if eval_model == "last" or best is None:
        note = "no best model in the checkpoint" if eval_model == "best" else ""
        return state, ModelChoice("last", iteration, iteration, note=note)
    since = best.get("since", 0)
    note = f"chosen among the validations from iteration {since} on" if since else ""
    return best, ModelChoice(
        "best", best["iteration"], iteration, best.get("return"), note, best.get("val_accuracy")
    )


@dataclass(frozen=True)
class MissingBaseline:
    """A baseline the protocol compares with that was not available (and how to get it)."""

    kind: str
    reason: str


@dataclass
class EvalReport:
    """An evaluation of a trained run under its experiment's protocol (``eval.json``).

    Attributes:
        experiment: the experiment's name.
        family: ``sinusoid``, ``classification``, ``meta_rl`` or ``standard`` (ordinary
            training, no adaptation).
        metric: what the curves measure, in words.
        higher_is_better: direction of the metric.
        error_bar: ``ci95`` or ``stderr`` (of the mean over test tasks).
        curves: every method's adaptation curve.
        headline: the benchmark's number.
        model: the model tested.
        protocol: the protocol's settings (plain values, family-specific).
        seconds: wall time of the evaluation.
        config: the resolved config evaluated with.
        display_scale: tables show ``value · display_scale`` (100: accuracy in %).
        decimals: digits after the point in tables.
        table_steps: the steps a table shows.
        references: the paper's published curves for this experiment (no error bars).
        gap_oracle: the ``method`` of the oracle that gap closure is measured against.
        baselines: how the stored baselines were trained, by kind.
        missing: baselines the protocol names that were not available.
        details: family-specific results (e.g. the pretrained model's tuned step sizes).
        schema_version: :data:`SCHEMA_VERSION` when written.
    """

    experiment: str
    family: Literal["sinusoid", "classification", "meta_rl", "standard"]
    metric: str
    higher_is_better: bool
    error_bar: ErrorBar
    curves: list[Curve]
    headline: Headline
    model: ModelChoice
    protocol: dict[str, Any]
    seconds: float
    config: dict[str, Any]
    display_scale: float = 1.0
    decimals: int = 2
    table_steps: list[int] = field(default_factory=list)
    references: list[Curve] = field(default_factory=list)
    gap_oracle: str | None = None
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[MissingBaseline] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def curve(self, method: str, setting: str = "") -> Curve | None:
        """The curve of ``method`` (in ``setting``), or None."""
        for curve in self.curves:
            if curve.method == method and curve.setting == setting:
                return curve
        return None

    def headline_values(self) -> tuple[float, float, float]:
        """``(before adaptation, headline value, its error bar)`` of the headline method."""
        h = self.headline
        curve = self.curve(h.method, h.setting)
        if curve is None:
            raise ReportError(f"{self.experiment}: the report has no {h.method} curve")
        value, err = curve.at(h.step)
        return curve.at(0)[0], value, err or 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # optional fields are absent unless set, so that such a report stays readable by the
        # older metarl that did not know them
        for curve in data["curves"] + data["references"]:
            if not curve["per_task"]:
                del curve["per_task"]
        if data["model"]["validation_accuracy"] is None:
            del data["model"]["validation_accuracy"]
        return data


def write_report(report: EvalReport, run_dir: Path) -> Path:
    """Write ``run_dir/eval.json`` atomically."""
    from metarl.run import atomic_write_text

    path = run_dir / EVAL_REPORT
    atomic_write_text(path, json.dumps(report.to_dict(), indent=1))
    return path


def _build(cls: type, fields: dict[str, Any], where: str) -> Any:
    """``cls(**fields)``; a field ``cls`` does not have was added by a newer metarl within the
    same schema, and is refused with a line that says so."""
    if not isinstance(fields, dict):
        raise TypeError(f"its {cls.__name__} is not an object")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ReportError(
            f"{where} was written by a newer metarl (its {cls.__name__} has "
            f"{', '.join(unknown)}, unknown to this one): upgrade metarl to read it"
        )
    hints = typing.get_type_hints(cls)
    for name, value in fields.items():
        if not _fits(value, hints[name]):
            raise TypeError(f"its {cls.__name__}'s {name} is {json.dumps(value)[:40]}")
    return cls(**fields)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type a report field declares (a report's own fields are
    plain: numbers, strings, lists of them, objects; nested parts are built first)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:  # JSON writes a whole float as an integer
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return hint is Any or isinstance(value, hint)


def report_from_dict(data: dict[str, Any], where: str = "eval.json") -> EvalReport:
    """Parse a report's JSON; an older schema, a field only a newer metarl knows, or a
    malformed file raises :class:`ReportError`."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    run = Path(where).parent
    if version != SCHEMA_VERSION:
        age = "a newer" if isinstance(version, int) and version > SCHEMA_VERSION else "an older"
        raise ReportError(
            f"{where} was written by {age} metarl (report schema {version or 1}; this one "
            f"reads {SCHEMA_VERSION}): run `metarl evaluate {run}` to write it again"
        )
    try:
        values = dict(data)
        values["curves"] = [_build(Curve, c, where) for c in data["curves"]]
        values["references"] = [_build(Curve, c, where) for c in data.get("references", [])]
        values["headline"] = _build(Headline, data["headline"], where)
        values["model"] = _build(ModelChoice, data["model"], where)
        values["missing"] = [_build(MissingBaseline, m, where) for m in data.get("missing", [])]
        return _build(EvalReport, values, where)
    except (KeyError, TypeError) as e:
        raise ReportError(f"{where} is not a metarl evaluation report ({e})") from None


def read_report(run_dir: str | Path) -> EvalReport | None:
    """The run's ``eval.json``, or None if it has none.

    Raises:
        ReportError: the file is of an older schema (re-run ``metarl evaluate``), has a field
            only a newer metarl knows (upgrade), or is malformed.
    """
    path = Path(run_dir) / EVAL_REPORT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path} is not valid JSON ({e}); re-run `metarl evaluate`") from None
    return report_from_dict(data, str(path))
