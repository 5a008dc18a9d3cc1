"""`metarl bench`: headline metrics, the verdict against the paper, the smoke checks, the report
with its dated history and README block, and one real (tiny) suite run end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metarl.benchmarks import collect, runner, suite
from metarl.benchmarks import report as report_mod
from metarl.benchmarks.collect import QualityResult, Score, gap_verdict
from metarl.benchmarks.registry import QUALITY, QualityBenchmark
from metarl.benchmarks.staleness import needs_evaluation
from metarl.cli import main
from metarl.config import ConfigError
from metarl.gap import gap_closed, gap_share, paired_error
from metarl.references import PaperResult
from metarl.reports import (
    Curve,
    EvalReport,
    Headline,
    MissingBaseline,
    ModelChoice,
    ReportError,
    read_report,
    write_report,
)


def _report(curves: list[Curve], headline: Headline, higher: bool = True, **kw) -> EvalReport:
    values = dict(experiment="x", family="meta_rl", metric="m", higher_is_better=higher,
                  error_bar="stderr", curves=curves, headline=headline,
                  model=ModelChoice("last", 5, 5), protocol={}, seconds=1.0, config={})  # fmt: skip
    values.update(kw)
    return EvalReport(**values)


def _rl_eval(pre: float, post: float, **kw) -> EvalReport:
    maml = Curve("meta_learned", "MAML", [0, 1, 2], [pre, post, post + 1], [1.0, 0.5, 0.5])
    return _report([maml], Headline("return after 1 step", "meta_learned", 1), **kw)


def test_the_headline_is_the_one_the_report_names():
    rl = Score.of(_rl_eval(-40.0, -12.0))
    assert (rl.before, rl.value, rl.err, rl.higher_better) == (-40.0, -12.0, 0.5, True)
    sinusoid = _report(
        [Curve("meta_learned", "MAML", [0, 1, 10], [9.0, 9.0, 9.0], [1.0] * 3, "K=5"),
         Curve("meta_learned", "MAML", [0, 1, 10], [3.0, 0.5, 0.1], [0.3, 0.05, 0.01], "K=10")],
        Headline("MSE, K=10, 1 step", "meta_learned", 1, "K=10"), higher=False,
    )  # fmt: skip
    h = Score.of(sinusoid)
    assert (h.before, h.value, h.err, h.higher_better) == (3.0, 0.5, 0.05, False)
    cls = _report(
        [Curve("meta_learned", "MAML", [0, 1, 2], [0.2, 0.9, 0.95], [0.01] * 3)],
        Headline("accuracy after 2 steps", "meta_learned", 2),
        display_scale=100.0,
    )
    h = Score.of(cls)
    assert (h.before, h.value, h.scale, h.metric) == (0.2, 0.95, 100.0, "accuracy after 2 steps")


def test_compare_with_the_paper_counts_both_error_bars():
    acc = Score("accuracy", 0.2, 0.975, 0.004, True, 100.0)
    assert collect.compare(acc, PaperResult("", 98.7, 0.4)) == "missed by 1.2"
    close = Score("accuracy", 0.2, 0.984, 0.004, True, 100.0)  # 98.4 ± 0.4 vs 98.7 ± 0.4
    assert collect.compare(close, PaperResult("", 98.7, 0.4)) == "met"
    mse = Score("MSE", 3.0, 0.5, 0.05, False)  # lower is better
    assert collect.compare(mse, PaperResult("", 0.77, 0.11)) == "met"
    assert collect.compare(mse, PaperResult("", 0.3, 0.05)).startswith("missed by 0.2")
    assert collect.compare(mse, PaperResult("figure")) == "no number in the paper"


def _result(name: str, before: float, value: float, higher: bool = True) -> QualityResult:
    h = Score("m", before, value, 0.1, higher)
    return QualityResult(
        name, name, "done", headline=vars(h), paper={"value": None, "err": None, "source": ""}
    )


def test_problems_flag_failures_nan_and_no_improvement():
    ok = [_result("a", -40.0, -12.0), _result("b", 3.0, 0.5, higher=False)]
    # Slightly worse, within two standard errors (0.1): noise at a smoke budget, not a failure.
    ok += [_result("noise", -1.0, -1.15), _result("noise-mse", 3.0, 3.15, higher=False)]
    assert collect.problems(ok, {"speed-x": {"table": ""}}) == []
    bad = [
        _result("worse", -12.0, -40.0),
        _result("nan", 3.0, math.nan, higher=False),
        QualityResult("broken", "broken", "failed", note="no eval.json"),
    ]
    found = collect.problems(bad, {"speed-x": {"error": "RuntimeError: boom"}})
    assert len(found) == 4
    assert any(p.startswith("worse: adaptation makes it worse") for p in found)
    assert any(p.startswith("nan: non-finite") for p in found)
    assert any("broken" in p for p in found) and any("boom" in p for p in found)


def test_the_verdict_sums_up_the_suite_in_one_line():
    assert collect.verdict("quick", [], ["a: failed"]) == (
        "quick suite: FAILED, 1 problem(s) listed above"
    )
    rows = [_result("a", -40.0, -12.0), _result("b", -40.0, -12.0), _result("c", -40.0, -30.0)]
    for row, comparison in zip(rows, ("met", "met", "missed by 3")):
        row.comparison, row.status = comparison, "done"
    rows[1].status = "in progress"
    rows.append(QualityResult("d", "d", "not run"))
    assert collect.verdict("paper", rows, []) == (
        "paper suite, 4 row(s): 1 met the paper, 1 met the paper so far (in progress), "
        "1 missed it, 1 not run"
    )
    assert collect.verdict("paper", [], []) == "paper suite, 0 row(s): no quality rows selected"
    assert collect.verdict("quick", rows, [], interrupted=True).startswith(
        "quick suite: interrupted"
    )
    assert collect.verdict("quick", rows[2:], [], report_only=True) == (
        "quick suite, report only (nothing ran): 1 done, 1 not run"
    )


def _run(date: str, value: float) -> dict:
    row = vars(_result("navigation", -40.0, value))
    row.update(iterations=20, target_iterations=500, status="in progress", comparison="met",
               evaluated=date)  # fmt: skip
    return {"suite": "paper", "date": date, "seconds": 75.0, "problems": [],
            "machine": {"cpu": "cpu", "cores": 2, "torch": "2"}, "quality": [row],
            "speed": {"speed-core": {"table": "| a |\n|---|\n| 1 |"}}}  # fmt: skip


def test_a_speed_plot_is_copied_beside_the_report_and_linked(tmp_path):
    work = tmp_path / "runs" / "family-omniglot"
    work.mkdir(parents=True)
    (work / "score_vs_time.png").write_bytes(b"png")
    run = _run("2026-11-20 10:00:00", -20.0)
    run["speed"]["family-omniglot"] = {
        "table": "| algorithm |\n|---|\n| MAML |",
        "result": {"plots": [str(work / "score_vs_time.png")]},
    }
    report = tmp_path / "report"
    report_mod.write_report(run, report)
    copy = "docs/benchmarks/paper/family-omniglot-score_vs_time.png"
    assert (report / copy).read_bytes() == b"png"
    text = (report / "BENCHMARKS.md").read_text()
    assert f"[family-omniglot-score_vs_time]({copy})" in text and str(tmp_path) not in text
    stored = json.loads((report / "benchmarks.json").read_text())["paper"]["speed"]
    assert stored["family-omniglot"]["result"]["plots"] == [copy]  # a later report keeps it
    report_mod.write_report(_run("2026-11-21 10:00:00", -20.0) | {"speed": stored}, report)
    assert f"[family-omniglot-score_vs_time]({copy})" in (report / "BENCHMARKS.md").read_text()


def test_report_keeps_dated_history_and_rewrites_only_the_readme_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{report_mod.README_BEGIN}\nold numbers\n{report_mod.README_END}\noutro\n"
    )
    report_mod.write_report(_run("2026-11-20 10:00:00", -20.0), tmp_path)
    later = _run("2026-11-23 10:00:00", -11.0)
    # Training went on past the evaluated checkpoint: the history gives the evaluated one.
    later["quality"][0].update(iterations=30, evaluated_iteration=20, note="evaluated at 20")
    written = report_mod.write_report(later, tmp_path)
    assert len(list((tmp_path / report_mod.HISTORY).glob("*-paper.json"))) == 2
    assert tmp_path / "BENCHMARKS.md" in written and readme in written
    text = (tmp_path / "BENCHMARKS.md").read_text()
    history = text[text.index("### History") :].splitlines()  # each evaluation, newest first
    assert history[4:6] == [
        "| navigation | 2026-11-23 10:00 | 20 | -11.00 ± 0.10 |",
        "| navigation | 2026-11-20 10:00 | 20 | -20.00 ± 0.10 |",
    ]
    # --report-only (record=False) rewrites the report but adds nothing to the history.
    report_mod.write_report(_run("2026-11-24 10:00:00", -11.0), tmp_path, record=False)
    assert len(list((tmp_path / report_mod.HISTORY).glob("*-paper.json"))) == 2
    latest = json.loads((tmp_path / "benchmarks.json").read_text())["paper"]
    assert latest["date"].startswith("2026-11-24")  # the rewritten report is the latest state
    new = readme.read_text()
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "old numbers" not in new
    assert "| navigation | m | -40.00 | -11.00 ± 0.10 |" in new


def test_cli_rejects_unknown_benchmarks_and_lists_them(capsys):
    assert main(["bench", "--only", "no-such-benchmark"]) == 2
    assert "unknown benchmark(s) no-such-benchmark" in capsys.readouterr().err
    assert main(["bench", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"sinusoid", "halfcheetah-vel", "ant-goal", "speed-simulator"} <= set(names)


def test_tiny_suite_runs_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    """The real pipeline (child `metarl train`/`evaluate` processes) at a tiny budget."""
    tiny = QualityBenchmark(
        "sinusoid", "sinusoid",
        {"iterations": 30, "baseline_iterations": 30, "eval_tasks": 20, "eval_shots": [10],
         "log_every": 10, "checkpoint_every": 30},
    )  # fmt: skip
    monkeypatch.setattr(suite, "QUALITY", (tiny,))
    monkeypatch.setattr(suite, "SPEED", {})
    runs, out = tmp_path / "runs", tmp_path / "report"
    code = suite.run_suite("quick", None, runs, out, progress=False)
    assert code == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith("quick suite: passed (1 done; tiny budgets: finite numbers")
    )
    run = json.loads((out / "benchmarks.json").read_text())["quick"]
    (row,) = run["quality"]
    assert row["status"] == "done" and row["iterations"] == 30
    assert row["headline"]["value"] < row["headline"]["before"]  # one step lowers the MSE
    assert row["peak_memory_mib"] > 10 and row["wall_seconds"] > 0
    assert all((out / p).is_file() for p in row["plots"]) and row["plots"]
    assert all(Path(p).name.startswith("sinusoid-") for p in row["plots"])
    # --report-only rewrites the report from the same run without training again.
    checkpoint = runs / "quick" / "sinusoid" / "checkpoint.pt"
    mtime = checkpoint.stat().st_mtime
    assert suite.run_suite("quick", None, runs, out, report_only=True, progress=False) == 0
    assert checkpoint.stat().st_mtime == mtime
    assert len(list((out / report_mod.HISTORY).glob("*.json"))) >= 1


def test_an_evaluation_is_stale_when_training_went_on_or_it_tested_another_model(tmp_path):
    run, baselines = tmp_path / "run", tmp_path / "baselines"
    run.mkdir()
    state = {"iteration": 5, "config": {}, "best": {"iteration": 3}}
    assert needs_evaluation(run, state, baselines)  # no eval.json yet
    write_report(_rl_eval(-40, -12, model=ModelChoice("best", 3, 5)), run)
    assert not needs_evaluation(run, state, baselines)
    assert needs_evaluation(run, {**state, "iteration": 6}, baselines)  # training went on
    last_wanted = {**state, "config": {"eval_model": "last"}}
    assert needs_evaluation(run, last_wanted, baselines)  # the protocol now tests the last one
    write_report(_rl_eval(-40, -12, model=ModelChoice("last", 5, 5)), run)
    assert not needs_evaluation(run, last_wanted, baselines)
    assert needs_evaluation(run, state, baselines)  # the protocol tests the best model it kept
    # A baseline that was missing and has been trained since makes it stale.
    write_report(_rl_eval(-40, -12, model=ModelChoice("last", 5, 5),
                          missing=[MissingBaseline("oracle", "none stored")]), run)  # fmt: skip
    assert not needs_evaluation(run, last_wanted, baselines)
    from metarl.results_table import results_table

    assert "not evaluated: oracle (PPO): none stored" in results_table(read_report(run))
    baselines.mkdir()
    (baselines / "oracle.pt").write_bytes(b"")
    assert needs_evaluation(run, last_wanted, baselines)


def test_an_old_report_is_refused_with_the_command_that_renews_it(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"results": {}, "iteration": 3}))
    with pytest.raises(ReportError, match="an older metarl.*run `metarl evaluate .*` to write it"):
        read_report(tmp_path)
    assert needs_evaluation(tmp_path, {"iteration": 3, "config": {}}, tmp_path)
    write_report(_rl_eval(-40, -12), tmp_path)  # a current one round-trips
    assert read_report(tmp_path) == _rl_eval(-40, -12)
    assert "per_task" not in (tmp_path / "eval.json").read_text()  # only where kept
    kept = _rl_eval(-40, -12)
    per_task = [[-41.0, -39.0], [-13.0, -11.0], [-12.0, -10.0]]
    kept.curves[0] = dataclasses.replace(kept.curves[0], per_task=per_task)
    write_report(kept, tmp_path)
    assert read_report(tmp_path) == kept


def test_a_report_with_a_field_this_metarl_does_not_know_asks_for_an_upgrade(tmp_path):
    write_report(_rl_eval(-40, -12), tmp_path)
    data = json.loads((tmp_path / "eval.json").read_text())
    assert "validation_accuracy" not in data["model"]  # absent unless set, for older readers
    data["model"]["future_field"] = 1.0
    (tmp_path / "eval.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match="newer metarl.*ModelChoice has future_field.*upgrade"):
        read_report(tmp_path)
    best = dataclasses.replace(_rl_eval(-40, -12), model=ModelChoice("best", 3, 5, None, "", 0.9))
    write_report(best, tmp_path)
    assert read_report(tmp_path) == best  # a validation accuracy, when set, round-trips


def test_gap_closed_between_random_init_and_oracle():
    report = _rl_eval(-90.0, -80.0)
    assert gap_closed(report) is None  # no oracle: nothing to measure the gap by
    report.curves.append(Curve("random_init", "random init", [0, 1], [-290.0, -265.0], [1, 1]))
    report.curves.append(Curve("oracle_ppo", "oracle (PPO)", [0], [-15.0], [1.0]))
    assert gap_closed(report) is None  # the evaluator names the yardstick
    report.gap_oracle = "oracle_ppo"
    assert gap_closed(report) == pytest.approx((265.0 - 80.0) / (265.0 - 15.0))
    report.curves[-1] = Curve("oracle_ppo", "oracle (PPO)", [0], [-270.0], [1.0])
    assert gap_share(report) is None  # an oracle that does not beat random init: no gap
    report.curves[-1] = Curve("oracle_ppo", "oracle (PPO)", [0], [math.nan], [1.0])
    assert gap_share(report) is None  # nor one whose return is not a number


def test_the_gap_error_matches_sampling_the_three_means():
    """The propagated error bar of the gap share against the spread of the share computed from
    means drawn with the stated errors (independent; small enough for first order to hold). The
    smallest term, random init's, still moves the bar by about 2%, four times the tolerance."""
    maml = Curve("meta_learned", "MAML", [0, 1], [-90.0, -80.0], [1.0, 3.0])
    report = _report([maml], Headline("return after 1 step", "meta_learned", 1))
    report.curves.append(Curve("random_init", "random init", [0, 1], [-290.0, -265.0], [9, 3.5]))
    report.curves.append(Curve("oracle_ppo", "oracle (PPO)", [0], [-15.0], [4.0]))
    report.gap_oracle = "oracle_ppo"
    gen = torch.Generator().manual_seed(0)
    m, r, o = (mean + error * torch.randn(800_000, generator=gen, dtype=torch.float64)
               for mean, error in ((-80.0, 3.0), (-265.0, 3.5), (-15.0, 4.0)))  # fmt: skip
    assert gap_share(report).error == pytest.approx(((m - r) / (o - r)).std().item(), rel=0.005)
    paper = PaperResult("", gap_closed=0.88)
    assert gap_verdict(report, paper) == (
        f"closes 74 ± {100 * gap_share(report).error:.0f}% of the random-init → oracle gap "
        "(paper: 88%)"
    )
    report.curve("oracle_ppo").error.clear()  # a yardstick without an error bar: the share alone
    assert gap_share(report).error is None
    assert gap_verdict(report, paper).startswith("closes 74% of the random-init")


def test_the_paired_gap_error_matches_resampling_the_tasks():
    """With per-task scores the error bar pairs the methods on each task: it must match the
    spread of the share over bootstrap resamples of the tasks, and here, where most of a task's
    score is the task's own difficulty shared by all methods, be far below the bar that takes
    the three means as independent."""
    gen = torch.Generator().manual_seed(1)
    n = 400
    difficulty = 30.0 * torch.randn(n, generator=gen, dtype=torch.float64)
    m, r, o = (level + difficulty + noise * torch.randn(n, generator=gen, dtype=torch.float64)
               for level, noise in ((-80.0, 6.0), (-265.0, 8.0), (-15.0, 5.0)))  # fmt: skip
    curves = [Curve.from_samples(method, method, torch.stack([x, x]), "stderr", [0, 1],
                                 keep_per_task=True)
              for method, x in (("meta_learned", m), ("random_init", r))]  # fmt: skip
    curves.append(Curve.from_samples("oracle_ppo", "oracle (PPO)", o[None], "stderr", [0],
                                     keep_per_task=True))  # fmt: skip
    report = _report(curves, Headline("return after 1 step", "meta_learned", 1))
    report.gap_oracle = "oracle_ppo"
    picks = torch.randint(0, n, (4000, n), generator=gen)
    shares = (m[picks].mean(1) - r[picks].mean(1)) / (o[picks].mean(1) - r[picks].mean(1))
    paired = gap_share(report).error
    assert paired == pytest.approx(shares.std().item(), rel=0.05)
    assert "paired over the test tasks" in gap_share(report).line()
    report.error_bar = "ci95"
    assert gap_share(report).error == pytest.approx(1.96 * paired)
    report.error_bar = "stderr"
    for curve in report.curves:  # the same report without its per-task scores
        curve.per_task.clear()
    assert gap_share(report).error > 4 * paired
    assert "taken as independent" in gap_share(report).line()
    with pytest.raises(ValueError, match="two tasks"):  # one task has no spread to measure
        paired_error(m[:1], r[:1], o[:1])


def test_a_gap_error_under_one_point_keeps_a_decimal():
    report = _rl_eval(-90.0, -80.0)  # MAML's error 0.5 after one step
    report.curves.append(Curve("random_init", "random init", [0, 1], [-290.0, -265.0], [1, 1.0]))
    report.curves.append(Curve("oracle_ppo", "oracle (PPO)", [0], [-15.0], [1.0]))
    report.gap_oracle = "oracle_ppo"
    assert gap_share(report).error < 0.01
    assert str(gap_share(report)) == f"74 ± {100 * gap_share(report).error:.1f}%"
    report.error_bar = "ci95"  # the line names the bars it propagated
    line = gap_share(report).line()
    assert line.endswith("(± from the three means' 95% intervals, taken as independent)")


def _clock_past_deadline_after_next_checkpoint(checkpoint: Path) -> SimpleNamespace:
    """A stand-in for the suite's ``time`` module: the deadline (1e9) passes as soon as a new
    checkpoint is written, so the test does not depend on this machine's speed."""
    before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None

    def now() -> float:
        current = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        return 2e9 if current != before else 0.0

    return SimpleNamespace(time=now, sleep=time.sleep, strftime=time.strftime,
                           localtime=time.localtime)  # fmt: skip


def test_time_limit_stops_training_and_the_next_call_resumes(tmp_path, monkeypatch):
    """The fallback: a trainer still running long after the deadline gets SIGINT (its last
    checkpoint stays), the run is evaluated where it stopped and reported in progress; the
    next call resumes it."""
    long = QualityBenchmark(
        "sinusoid", "sinusoid",
        {"iterations": 10**6, "log_every": 50, "checkpoint_every": 50, "baseline_iterations": 20,
         "eval_tasks": 10, "eval_shots": [10], "eval_steps": 1},
    )  # fmt: skip
    run_dir = tmp_path / "quick" / "sinusoid"
    checkpoint = run_dir / "checkpoint.pt"
    monkeypatch.setattr(runner, "time", _clock_past_deadline_after_next_checkpoint(checkpoint))
    runner.run_quality(long, "quick", run_dir, 1e9, progress=False)
    first = collect.collect_quality(long, run_dir, "quick")
    assert first.status == "in progress" and 0 < first.iterations < 10**6, first
    assert first.headline is not None and not collect.problems([first], {})
    monkeypatch.setattr(runner, "time", _clock_past_deadline_after_next_checkpoint(checkpoint))
    runner.run_quality(long, "quick", run_dir, 1e9, progress=False)
    second = collect.collect_quality(long, run_dir, "quick")
    assert second.status == "in progress" and second.iterations > first.iterations, second
    # The quick suite counts an unfinished benchmark as a problem: it must run to the end.
    assert collect.problems([second], {}, complete=True)


def test_at_the_time_limit_training_stops_itself_with_a_checkpoint(tmp_path, monkeypatch):
    """The trainer is told the limit: it stops where a log window ends and checkpoints there,
    between periodic checkpoints, so no training is lost and no signal is needed."""
    long = QualityBenchmark(
        "sinusoid", "sinusoid",
        {"iterations": 10**6, "log_every": 50, "checkpoint_every": 10**5,
         "baseline_iterations": 20, "eval_tasks": 10, "eval_shots": [10], "eval_steps": 1},
    )  # fmt: skip
    run_dir = tmp_path / "quick" / "sinusoid"
    # The suite's clock stands just before the deadline: the child is told 0 minutes are left.
    clock = SimpleNamespace(time=lambda: 1e9, sleep=time.sleep, strftime=time.strftime,
                            localtime=time.localtime)  # fmt: skip
    monkeypatch.setattr(runner, "time", clock)
    runner.run_quality(long, "quick", run_dir, 1e9 + 0.001, progress=False)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 50  # the first window's end
    assert runner.read_info(run_dir)["train_exit"] == 0
    result = collect.collect_quality(long, run_dir, "quick")
    assert result.status == "in progress" and result.iterations == state["iteration"]


def test_the_validation_note_gives_the_last_and_a_better_earlier_value():
    metrics = [{"iteration": 1000, "val/accuracy": 0.992}, {"iteration": 1500},
               {"iteration": 2000, "val/accuracy": 0.998}, {"iteration": 3000,
               "val/accuracy": 0.9972}, {"iteration": 4000, "val/accuracy": 0.9999}]  # fmt: skip
    assert collect.validation_note(metrics, 3000) == (
        "validation 99.72% at 3,000 (best 99.80% at 2,000)"
    )  # a later log than the checkpoint is not the run's
    assert collect.validation_note(metrics, 2000) == "validation 99.80% at 2,000"
    assert collect.validation_note([{"iteration": 10, "meta/loss": 1.0}], 10) == ""
    assert collect.validation_note([*metrics[:1], {"iteration": 2000, "val/accuracy": "nan"}],
                                   2000) == "validation 99.20% at 1,000"  # fmt: skip


def test_a_benchmark_without_its_dataset_is_skipped_not_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("METARL_DATA", str(tmp_path / "no-data-here"))
    (bench,) = [b for b in QUALITY if b.name == "omniglot-5w1s"]
    run_dir = tmp_path / "quick" / bench.name
    runner.run_quality(bench, "quick", run_dir, None, progress=False)
    result = collect.collect_quality(bench, run_dir, "quick")
    assert result.status == "skipped" and "dataset 'omniglot' not found" in result.note
    assert collect.problems([result], {}, complete=True) == []


def test_an_only_run_keeps_every_row_of_the_latest_report(tmp_path, monkeypatch):
    """`--only speed-x` after a `--report-only` rewrite (not in the history) keeps the rewrite's
    rows; benchmarks never reported show up as "not run", not as missing rows."""
    benches = tuple(QualityBenchmark(name, "sinusoid", {}) for name in ("first", "second"))
    monkeypatch.setattr(suite, "QUALITY", benches)
    monkeypatch.setattr(
        suite, "SPEED", {"speed-fake": lambda s, workdir, deadline: ({"x": 1.0}, "| x |")}
    )
    runs, out = tmp_path / "runs", tmp_path / "report"
    assert suite.run_suite("paper", ["speed-fake"], runs, out, progress=False) == 0
    latest = json.loads((out / "benchmarks.json").read_text())["paper"]
    assert [(r["name"], r["status"]) for r in latest["quality"]] == [
        ("first", "not run"), ("second", "not run")
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="is not a directory of runs"):  # a mistyped path
        suite.run_suite("paper", None, runs, out, report_only=True, progress=False)
    runs.mkdir()
    # A --report-only rewrite marks its rows; the next --only run starts from it.
    assert suite.run_suite("paper", None, runs, out, report_only=True, progress=False) == 0
    rewritten = json.loads((out / "benchmarks.json").read_text())["paper"]
    rewritten["quality"][0]["note"] = "from the rewrite"
    (out / "benchmarks.json").write_text(json.dumps({"paper": rewritten}))
    assert suite.run_suite("paper", ["speed-fake"], runs, out, progress=False) == 0
    latest = json.loads((out / "benchmarks.json").read_text())["paper"]
    assert [r["name"] for r in latest["quality"]] == ["first", "second"]
    assert latest["quality"][0]["note"] == "from the rewrite"
    assert latest["speed"]["speed-fake"]["result"] == {"x": 1.0}
    stored = report_mod.history(out)[-1]  # the dated copy holds the same rows
    assert [r["note"] for r in stored["quality"]] == [r["note"] for r in latest["quality"]]
    # The header says what this call ran: not a "suite wall time" of a single benchmark.
    text = (out / "BENCHMARKS.md").read_text()
    assert "This call ran only speed-fake (" in text and "Suite wall time" not in text


def test_a_named_variant_trains_with_its_settings_and_its_own_paper_number(tmp_path, monkeypatch):
    """First-order MAML on Omniglot is the experiment with ``meta_gradient=first_order`` in
    both suites, compared with the paper's first-order numbers, not the second-order ones."""
    by_name = {b.name: b for b in QUALITY}
    for shots, second, first in (("5w1s", 98.7, 98.3), ("20w1s", 95.8, 89.4)):
        variant = by_name[f"omniglot-{shots}-first-order"]
        assert variant.experiment == f"omniglot-{shots}"
        assert variant.overrides("paper") == {"meta_gradient": "first_order"}
        assert (variant.paper.value, by_name[f"omniglot-{shots}"].paper.value) == (first, second)
    tiny = QualityBenchmark(
        "sinusoid-first-order", "sinusoid",
        {"iterations": 10, "baseline_iterations": 10, "eval_tasks": 5, "eval_shots": [10],
         "log_every": 10, "checkpoint_every": 10},
        settings={"meta_gradient": "first_order"},
    )  # fmt: skip
    monkeypatch.setattr(suite, "QUALITY", (tiny,))
    monkeypatch.setattr(suite, "SPEED", {})
    assert suite.run_suite("quick", None, tmp_path / "runs", tmp_path / "out", progress=False) == 0
    config = (tmp_path / "runs" / "quick" / "sinusoid-first-order" / "config.yaml").read_text()
    assert "meta_gradient: first_order" in config


def test_a_report_only_rewrite_shows_the_rows_a_time_to_quality_run_holds(tmp_path):
    """`--report-only` (and a call stopped by Ctrl-C) reports an hours-long time-to-quality
    benchmark from its progress file, not from an older report's copy of it."""
    from metarl.benchmarks.speed import TIME_TO
    from metarl.benchmarks.speed.time_to_quality import PROGRESS, ROWS

    spec = TIME_TO["halfcheetah-dir-remedies"]
    first, *others = ROWS[spec.rows]
    points = [{"iterations": i, "score": i / 1000, "seconds": 9.0 * i, "cpu_seconds": 9.0 * i,
               "return_2": None, "model": ["best", i]} for i in range(50, 550, 50)]  # fmt: skip
    rows = {first: {"settings": ROWS[spec.rows][first], "points": points, "reached": None}}
    workdir = tmp_path / "runs" / "paper" / "halfcheetah-dir-remedies"
    workdir.mkdir(parents=True)
    (workdir / PROGRESS).write_text(json.dumps({
        "experiment": spec.experiment, "target": "the target", "threshold": 0.64,
        "every": spec.every, "max_iterations": 500, "machine": {}, "rows": rows,
    }))  # fmt: skip
    out = tmp_path / "report"
    assert suite.run_suite("paper", ["halfcheetah-dir-remedies"], tmp_path / "runs", out,
                           report_only=True, progress=False) == 0  # fmt: skip
    text = (out / "BENCHMARKS.md").read_text()
    assert f"| {first} | not within 500 iterations | – | – | – | 0.5 (500) |" in text
    assert all(f"| {name} | not started |" in text for name in others)


def test_an_unreadable_earlier_report_or_a_bad_time_limit_is_refused_before_training(
    tmp_path, monkeypatch
):
    """What would stop the report after hours of training is refused first, in one line."""
    trained = []
    monkeypatch.setattr(suite, "run_quality", lambda *args, **kwargs: trained.append(args))
    name, runs, out = QUALITY[0].name, tmp_path / "runs", tmp_path / "report"
    out.mkdir()
    not_a_report = "benchmarks.json is not a metarl benchmark report"
    for text, message in (("{broken", "benchmarks.json is not valid JSON"),
                          ("[1, 2]", not_a_report), ('{"paper": 5}', not_a_report)):  # fmt: skip
        (out / "benchmarks.json").write_text(text)
        with pytest.raises(ReportError, match=message):
            suite.run_suite("paper", [name], runs, out, progress=False)
    (out / "benchmarks.json").unlink()
    (out / report_mod.HISTORY).mkdir(parents=True)
    (out / report_mod.HISTORY / "20260101-000000-paper.json").write_text('{"quick": 5}')
    with pytest.raises(ReportError, match="000000-paper.json is not a metarl benchmark report"):
        suite.run_suite("paper", [name], runs, out, progress=False)
    for minutes in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="time limit: .* minutes; give a number ≥ 0"):
            suite.run_suite("paper", [name], runs, tmp_path / "new", minutes, progress=False)
    assert trained == []


def test_a_report_with_a_field_of_the_wrong_type_is_malformed_not_a_crash(tmp_path):
    write_report(_rl_eval(-40, -12), tmp_path)
    good = json.loads((tmp_path / "eval.json").read_text())
    for broken, message in (
        ({"curves": [{**good["curves"][0], "mean": ["a", None]}]}, "Curve's mean is"),
        ({"details": "x"}, 'EvalReport\'s details is "x"'),
        ({"model": {**good["model"], "choice": "first"}}, "ModelChoice's choice is"),
        ({"seconds": True}, "EvalReport's seconds is true"),
    ):
        (tmp_path / "eval.json").write_text(json.dumps({**good, **broken}))
        with pytest.raises(ReportError, match=f"is not a metarl evaluation report .its {message}"):
            read_report(tmp_path)
    good["curves"][0]["mean"] = [-40, -12.5]  # whole numbers are floats in JSON
    (tmp_path / "eval.json").write_text(json.dumps(good))
    assert read_report(tmp_path).curves[0].mean == [-40, -12.5]
