"""The benchmark compares like with like: every variant computes the same meta-gradient."""

import json
import math
import time
from pathlib import Path

import pytest

from metarl.benchmarks.speed.core import check_same_meta_gradient


def test_benchmark_variants_agree():
    assert check_same_meta_gradient() < 1e-5


MIB = 1 << 20
_kept: list = []


def _allocating_setup(variant: str, iterations: int):
    """A step that needs 64 MiB: freed at once (``temporary``) or, like an allocator's pool,
    allocated by the first step and reused by the later ones (``kept``)."""
    import torch

    def step(batch: int) -> None:
        if variant == "temporary" or not _kept:
            buffer = torch.ones(64 * MIB // 4)  # float32, every page touched
            if variant == "kept":
                _kept.append(buffer)

    return step, list(range(iterations))


@pytest.mark.parametrize("variant", ["temporary", "kept"])
def test_peak_memory_counts_what_the_steps_allocate_from_before_the_first(variant):
    """Memory the first step allocates and the later ones reuse still counts: a warm-up step
    before measuring would hide it (a Conv-4 meta-iteration read 23 MiB instead of 220)."""
    from metarl.benchmarks.common import peak_memory_mib

    assert 60 < peak_memory_mib(_allocating_setup, variant, iterations=3) < 200


def test_memory_family_shows_second_order_maml_growing_with_the_inner_steps():
    """The memory table measures what it claims: second-order MAML keeps every inner step's
    graph (each Conv-4 step over 32 tasks stores tens of MiB), first-order MAML keeps none."""
    from metarl.benchmarks.speed.family_memory import format_family_memory, measure

    grown = {}
    for name in ("MAML", "first-order MAML"):
        one, _ = measure(f"{name}|1", iterations=1)
        four, seconds = measure(f"{name}|4", iterations=1)
        assert one > 0 and seconds > 0
        grown[name] = four - one
    assert grown["MAML"] > 60, grown
    assert grown["MAML"] > 2 * max(grown["first-order MAML"], 0.0), grown

    rows = [{"algorithm": "MAML", "inner_steps": n, "peak_memory_mib": 10.0 * n,
             "seconds_per_iteration": 0.5 * n} for n in (1, 4)]  # fmt: skip
    table = format_family_memory({"setting": "s", "steps": [1, 4], "rows": rows,
                                  "machine": {"cpu": "c", "cores": 2, "torch": "t"}})  # fmt: skip
    assert "| MAML | 10 MiB, 0.50 s | 40 MiB, 2.00 s |" in table


def test_a_time_budget_ends_training_with_a_checkpoint_and_resumes(tmp_path):
    """`time_budget` stops a run where its time ran out, with the checkpoint and the last log
    at that iteration; a resumed run may raise the budget and goes on from there."""
    import json

    import torch

    from metarl.api import train

    run = tmp_path / "run"
    train("sinusoid", {"time_budget": 0.5, "log_every": 1000}, out=run, progress=False)

    def state() -> tuple[int, int, float]:
        checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
        logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["iteration"]
        return checkpoint["iteration"], logged, checkpoint["elapsed"]

    first, logged, elapsed = state()
    assert 0 < first < 70_000 and logged == first and elapsed >= 0.5
    train("sinusoid", {"time_budget": 1.5}, resume=run, progress=False)
    second, logged, elapsed = state()
    assert second > first and logged == second and elapsed >= 1.5


def test_a_run_its_time_budget_stopped_is_finished():
    """A run short of its iterations is unfinished unless its time budget, on the budget's
    clock, ran out: then it is done (its evaluation carries no "not finished" warning)."""
    from types import SimpleNamespace as Config

    from metarl.budget import short_of_budget

    state = {"iteration": 10, "elapsed": 5.0, "cpu_elapsed": 2.0}
    assert short_of_budget(state, Config(iterations=20))  # no time budget
    assert not short_of_budget(state, Config(iterations=10))
    assert not short_of_budget(state, Config(iterations=20, time_budget=5.0))  # 5 of 5 wall s
    assert short_of_budget(state, Config(iterations=20, time_budget=5.0, budget_clock="cpu"))
    assert not short_of_budget(state, Config(iterations=20, time_budget=2.0, budget_clock="cpu"))


def test_progress_is_counted_in_the_budget_s_own_unit():
    """Meta-training counts iterations, ordinary training epochs: the line an unfinished run's
    evaluation carries says which, from the config's class, with the checkpoint's count."""
    from metarl.budget import progress_line
    from metarl.experiments import load_config

    state = {"iteration": 1200}
    meta = load_config("omniglot-5w1s", {})
    assert progress_line(state, meta) == "1,200 of 60,000 iterations"
    standard = load_config("standard-mnist", {"epochs": 3})
    assert progress_line({"iteration": 1}, standard) == "1 of 3 epochs"


def test_a_cpu_time_budget_counts_the_process_cpu_seconds_not_the_clock(tmp_path, monkeypatch):
    """With ``budget_clock=cpu`` a wall clock running 20x fast (a machine busy with other work,
    seen from this process) does not end training: the process's CPU seconds do (a CPU clock
    running 20x fast ends it early). The fast wall clock ends a wall budget 20x early."""
    import time

    import torch

    from metarl.api import train
    from metarl.config import ConfigError

    real = time.perf_counter
    origin = real()
    monkeypatch.setattr(time, "perf_counter", lambda: origin + 20.0 * (real() - origin))

    def run(clock: str, name: str | None = None) -> dict:
        out = tmp_path / (name or clock)
        train("sinusoid", {"time_budget": 0.5, "budget_clock": clock}, out=out, progress=False)
        return torch.load(out / "checkpoint.pt", weights_only=True)

    cpu, wall = run("cpu"), run("wall")
    real_cpu = time.process_time
    cpu_origin = real_cpu()
    monkeypatch.setattr(time, "process_time", lambda: cpu_origin + 20.0 * (real_cpu() - cpu_origin))
    fast_cpu = run("cpu", "fast-cpu")
    assert fast_cpu["cpu_elapsed"] >= 0.5 and 5 * fast_cpu["iteration"] < cpu["iteration"]
    state = torch.load(tmp_path / "cpu" / "checkpoint.pt", weights_only=True)
    del state["cpu_elapsed"]  # as written before CPU time was counted
    torch.save(state, tmp_path / "cpu" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="did not count CPU time"):
        train("sinusoid", {"time_budget": 1.0}, resume=tmp_path / "cpu", progress=False)
    # the sinusoid run keeps at most ~2 threads busy, so 0.5 CPU s take >= 0.25 real s: >= 5 s
    # on the 20x clock
    assert cpu["cpu_elapsed"] >= 0.5 and cpu["elapsed"] >= 5.0
    assert 0.5 <= wall["elapsed"] and wall["cpu_elapsed"] < 0.5
    assert cpu["iteration"] > 5 * wall["iteration"]


def test_the_family_table_reads_a_diverged_mean_as_diverged():
    from metarl.benchmarks.speed.family_budget import format_family_budget

    score = {"steps": [1, 10], "mean": [0.5, float("nan")], "error": [0.01, float("nan")]}
    point = {"seconds": 2.0, "iterations": 400, "scores": {k: score for k in ("K=20", "K=5")}}
    row = {"points": [point], "peak_mib": 40.0, "settings": {}}
    result = {"experiment": "sinusoid", "budget_s": 2.0, "pretrained": {}, "scale": 1.0,
              "metric": "MSE", "rows": {"Meta-SGD": row}}  # fmt: skip
    table = format_family_budget(result)
    assert "| algorithm | K=5 | K=20 |" in table  # settings in order
    assert "| Meta-SGD | 0.500 ± 0.010 \\| diverged |" in table
    assert "| 400 | 5.0 ms | 40 MiB |" in table
    assert table.startswith("sinusoid, 2 s of training")  # a stored result without a clock
    assert format_family_budget({**result, "clock": "cpu"}).startswith("sinusoid, 2 CPU s of")
    header, rule = table.splitlines()[2:4]
    assert header.count(" | ") + 1 == rule.count("|") - 1  # as many columns as the rule has


class ChildAsked(Exception):
    """A benchmark asked for a child command (the fake below records it and refuses)."""


def _refuse_children(monkeypatch) -> list[list[str]]:
    """Make every ``run_child`` record its arguments and raise :class:`ChildAsked`."""
    from metarl.benchmarks import runner

    calls: list[list[str]] = []

    def run_child(args, *more, **options):
        calls.append(args)
        raise ChildAsked

    monkeypatch.setattr(runner, "run_child", run_child)
    return calls


@pytest.mark.parametrize("changed", [{"budget_s": 8.0}, {"clock": "wall"}])
def test_the_family_benchmark_resumes_only_the_same_comparison(changed, tmp_path, monkeypatch):
    """A second call of the same comparison measures nothing again (no child runs); one with
    another budget, or a budget on another clock, starts afresh rather than resume runs
    trained past (or short of) its budget. A stored comparison that names no clock was
    measured on the wall clock."""
    from metarl.benchmarks import family_settings
    from metarl.benchmarks.speed import family_budget

    calls = _refuse_children(monkeypatch)
    point = {"seconds": 1.0, "iterations": 5, "scores": {}}
    done = {"experiment": "sinusoid", "budget_s": 4.0, "pretrained": {}, "evaluation": {},
            "settings": family_settings.ALGORITHMS,
            "rows": {"MAML": {"points": [point] * 3, "peak_mib": 9.0, "settings": {}}}}  # fmt: skip
    (tmp_path / family_budget.PROGRESS).write_text(json.dumps({**done, "clock": "cpu"}))
    (tmp_path / "maml").mkdir()
    result = family_budget.bench_family_budget("sinusoid", 4.0, tmp_path, algorithms=["MAML"],
                                               resume=True)  # fmt: skip
    assert calls == [] and result["rows"]["MAML"]["points"] == [point] * 3
    (tmp_path / family_budget.PROGRESS).write_text(json.dumps(done))  # no clock: the wall's
    for clock in ("wall", None):  # None: the stored comparison's clock, its points kept
        result = family_budget.bench_family_budget("sinusoid", 4.0, tmp_path, algorithms=["MAML"],
                                                   resume=True, clock=clock)  # fmt: skip
        assert calls == [] and result["rows"]["MAML"]["points"] == [point] * 3
        assert result["clock"] == "wall"
    (tmp_path / family_budget.PROGRESS).write_text(json.dumps({**done, "clock": "cpu"}))
    with pytest.raises(ChildAsked):
        family_budget.bench_family_budget("sinusoid", changed.get("budget_s", 4.0), tmp_path,
                                          algorithms=["MAML"], resume=True,
                                          clock=changed.get("clock", "cpu"))  # fmt: skip
    assert calls and not (tmp_path / family_budget.PROGRESS).exists()  # emptied first
    assert f"budget_clock={changed.get('clock', 'cpu')}" in calls[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_family_benchmark_trains_on_to_each_share_of_the_budget(workers, tmp_path, monkeypatch):
    """One training run per algorithm, resumed to a quarter, half and all of the budget, with
    each point's seconds read on the comparison's clock and on the wall. Algorithms trained
    side by side train the shared baselines once, and the rows keep the algorithms' order."""
    from types import SimpleNamespace

    from metarl import reports
    from metarl.benchmarks import runner
    from metarl.benchmarks.runner import ChildResult
    from metarl.benchmarks.speed import family_budget

    calls: list[list[str]] = []
    baselines_trained = []

    def run_child(args, *more, **options):
        calls.append(args)
        flag = next((f for f in ("--out", "--resume") if f in args), None)
        run_dir = Path(args[args.index(flag) + 1] if flag else args[1])
        if args[0] == "train":
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "checkpoint.pt").write_bytes(b"")
        elif not (run_dir / "baselines.pt").exists():  # evaluate: the baselines are missing
            baselines_trained.append(run_dir.name)
            (run_dir / "baselines.pt").write_bytes(b"")
        return ChildResult(0, 10.0, False)

    report = SimpleNamespace(metric="MSE", higher_is_better=False, display_scale=1.0, curves=[],
                             model=SimpleNamespace(iteration=7))  # fmt: skip
    monkeypatch.setattr(runner, "run_child", run_child)
    monkeypatch.setattr(reports, "read_report", lambda run_dir: report)
    monkeypatch.setattr(family_budget, "_elapsed", lambda run_dir: {"wall": 3.0, "cpu": 2.0})
    result = family_budget.bench_family_budget(
        "sinusoid", 8.0, tmp_path, algorithms=["MAML", "Reptile"], workers=workers
    )
    for name in ("maml", "reptile"):
        trained = [c for c in calls if c[0] == "train" and str(tmp_path / name) in c]
        assert [c[-2] for c in trained] == ["time_budget=2", "time_budget=4", "time_budget=8"]
        assert "--out" in trained[0] and all("--resume" in c for c in trained[1:])
    assert len(baselines_trained) == 1
    assert list(result["rows"]) == ["MAML", "Reptile"]
    for row in result["rows"].values():
        assert [(p["seconds"], p["wall_seconds"]) for p in row["points"]] == [(2.0, 3.0)] * 3


def test_the_family_benchmark_reruns_only_an_algorithm_whose_settings_changed(
    tmp_path, monkeypatch
):
    from metarl.benchmarks import family_settings
    from metarl.benchmarks.speed import family_budget

    calls = _refuse_children(monkeypatch)
    point = {"seconds": 1.0, "iterations": 5, "scores": {}}
    changed = {**family_settings.settings_for("sinusoid")["MAML++"], "step_size_lr": 0.5}
    rows = {"MAML": {"points": [point] * 3, "peak_mib": 9.0, "settings": {}},
            "MAML++": {"points": [point] * 3, "peak_mib": 9.0, "settings": changed}}  # fmt: skip
    done = {"experiment": "sinusoid", "budget_s": 4.0, "pretrained": {}, "evaluation": {},
            "rows": rows}  # fmt: skip
    (tmp_path / family_budget.PROGRESS).write_text(json.dumps({**done, "clock": "cpu"}))
    (tmp_path / "mamlpp").mkdir()
    (tmp_path / "mamlpp" / "checkpoint.pt").write_bytes(b"trained with other settings")
    with pytest.raises(ChildAsked):
        family_budget.bench_family_budget("sinusoid", 4.0, tmp_path, algorithms=["MAML", "MAML++"],
                                          resume=True)  # fmt: skip
    assert len(calls) == 1 and "--out" in calls[0]  # MAML++ from scratch, MAML kept
    assert "step_size_lr=0.0001" in calls[0]
    assert not (tmp_path / "mamlpp" / "checkpoint.pt").exists()


def test_the_family_benchmark_adds_the_common_settings_to_every_algorithm(tmp_path, monkeypatch):
    """Meta-Dataset episodes for every row, after each algorithm's own settings; the title
    names the comparison, and no published number of the base experiment is claimed."""
    from metarl.benchmarks.speed import META_DATASET, family_budget

    calls = _refuse_children(monkeypatch)
    with pytest.raises(ChildAsked):
        family_budget.bench_family_budget(
            "omniglot-5w1s", 4.0, tmp_path, algorithms=["Reptile"], common=META_DATASET,
            title="Meta-Dataset episodes",
        )  # fmt: skip
    assert "algorithm=reptile" in calls[0] and "episodes=meta_dataset" in calls[0]
    assert "meta_batch_size=1" in calls[0]
    result = {"experiment": "omniglot-5w1s", "title": "Meta-Dataset episodes", "budget_s": 4.0,
              "rows": {}, "pretrained": {}}  # fmt: skip
    table = family_budget.format_family_budget(result)
    assert table.startswith("Meta-Dataset episodes, 4 s") and "Published" not in table


@pytest.mark.parametrize(
    "name", ["family-sinusoid", "family-omniglot", "family-omniglot-20w1s", "family-meta-dataset"]
)
@pytest.mark.parametrize("suite", ["quick", "paper"])
def test_the_family_entries_call_the_benchmark_as_it_is_declared(name, suite, monkeypatch):
    import inspect

    from metarl.benchmarks.runner import missing_dataset
    from metarl.benchmarks.speed import SPEED, BenchmarkUnavailable, family_budget

    bound, declared = [], inspect.signature(family_budget.bench_family_budget)

    def record(*args, **kwargs):
        bound.append(declared.bind(*args, **kwargs))
        raise BenchmarkUnavailable("recorded")

    monkeypatch.setattr(family_budget, "bench_family_budget", record)
    with pytest.raises(BenchmarkUnavailable):
        SPEED[name](suite, Path("unused"))
    needs = {
        "family-sinusoid": [],
        "family-omniglot": ["omniglot-5w1s"],
        "family-omniglot-20w1s": ["omniglot-20w1s"],
        "family-meta-dataset": ["omniglot-5w1s", "mnist-5w1s", "fashion-mnist-5w1s"],
    }
    if any(missing_dataset(experiment) for experiment in needs[name]):
        assert not bound  # refused before training, with the missing dataset's reason
        return
    arguments = bound[0].arguments
    assert isinstance(arguments["workdir"], Path) and arguments["seconds"] > 0
    assert arguments.get("resume", False) == (suite == "paper")


def test_a_log_after_a_resume_averages_the_iterations_since_the_resume(tmp_path):
    """Resumed at 137 with log_every=100, the row at 200 is the mean of iterations 138-200,
    as an uninterrupted run that logs every iteration gives them."""
    from metarl.api import train

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    base = {"log_every": 100, "checkpoint_every": 1000, "tensorboard": False}
    train("sinusoid", {**base, "iterations": 137}, out=tmp_path / "a", progress=False)
    train("sinusoid", {"iterations": 200}, resume=tmp_path / "a", progress=False)
    every = {**base, "log_every": 1, "iterations": 200}
    train("sinusoid", every, out=tmp_path / "b", progress=False)
    resumed = rows(tmp_path / "a")[-1]
    one_by_one = [r["meta/query_loss"] for r in rows(tmp_path / "b") if r["iteration"] > 137]
    assert resumed["iteration"] == 200 and len(one_by_one) == 63
    assert math.isclose(resumed["meta/query_loss"], sum(one_by_one) / 63, rel_tol=1e-5)


def _fake_children(
    monkeypatch, clock: list[float] | None = None
) -> tuple[dict[str, int], list[list[str]]]:
    """Replace the bench's child processes by a recorder: every command line (read by the CLI's
    parser, as a child would) and, per run folder, the iterations it was last trained to (a
    checkpoint file marks the folder trained). With ``clock`` (seconds, one per iteration), a
    training told ``--time-limit`` stops where the limit ends, as the trainer does."""
    from metarl.benchmarks import runner
    from metarl.cli import build_parser
    from metarl.run import CHECKPOINT

    trained: dict[str, int] = {}
    calls: list[list[str]] = []
    parser = build_parser()

    class Child:
        exit_code = 0
        stopped = False

    def run_child(args, *more, **options):
        calls.append(args)
        parsed = parser.parse_args(args)
        if args[0] == "train":
            folder = args[args.index("--resume" if "--resume" in args else "--out") + 1]
            sets = args[args.index("--set") + 1 :]
            wanted = int(next(s for s in sets if s.startswith("iterations="))[11:])
            start = trained.get(folder, 0)
            if clock is not None:
                limit = parsed.time_limit
                steps = wanted - start if limit is None else min(wanted - start, round(60 * limit))
                clock[0] += steps
                wanted = start + steps
            trained[folder] = wanted
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / CHECKPOINT).write_bytes(b"")
        return Child()

    monkeypatch.setattr(runner, "run_child", run_child)
    return trained, calls


def test_time_to_quality_stops_at_the_first_evaluation_that_reaches_the_target(
    tmp_path, monkeypatch
):
    """Evaluated every 10 iterations, a return after one step of −30 + 0.5·iterations first
    reaches −11.68 at 40 iterations; training seconds come from the checkpoint; a resumed call
    measures nothing again; a row that never reaches it stops at the budget."""
    from metarl import reports, run
    from metarl.benchmarks.speed import time_to_quality as ttq
    from metarl.reports import Curve

    trained, calls = _fake_children(monkeypatch)

    class Report:
        def __init__(self, iterations, slope):
            self.value = -30.0 + slope * iterations

        def curve(self, method):
            return Curve(method, "MAML", [0, 1, 2], [-40.0, self.value, self.value + 5])

    slopes = {"fast": 0.5, "slow": 0.01}
    monkeypatch.setattr(reports, "read_report",
                        lambda d: Report(trained[str(d)], slopes[Path(d).name]))  # fmt: skip
    monkeypatch.setattr(run, "load_checkpoint",
                        lambda d: {"elapsed": 2.0 * trained[str(d)], "iteration": trained[str(d)],
                                   "cpu_elapsed": 3.0 * trained[str(d)]})  # fmt: skip
    options = {"fast": ["fisher_subsample=5"], "slow": []}
    result = ttq.bench_time_to_quality("navigation", tmp_path, 10, 60, options=options)
    fast, slow = result["rows"]["fast"], result["rows"]["slow"]
    assert fast["reached"]["iterations"] == 40 and fast["reached"]["seconds"] == 80.0
    assert fast["reached"]["return_2"] == fast["reached"]["score"] + 5
    assert slow["reached"] is None and [p["iterations"] for p in slow["points"]][-1] == 60
    table = ttq.format_time_to_quality(result)
    assert fast["reached"]["cpu_seconds"] == 120.0
    assert "| fast | **80 s** | 120 s | 40 |" in table
    assert "| slow | not within 60 iterations |" in table
    header, rule = table.splitlines()[2:4]
    assert header.count(" | ") + 1 == rule.count("|") - 1  # as many columns as the rule has
    old = {**fast["reached"]}
    del old["cpu_seconds"]  # measured before CPU time was kept
    earlier = {**result, "rows": {"fast": {**fast, "reached": old}}}
    assert "| fast | **80 s** | – | 40 |" in ttq.format_time_to_quality(earlier)
    calls.clear()
    again = ttq.bench_time_to_quality("navigation", tmp_path, 10, 60, options=options,
                                      resume=True)  # fmt: skip
    assert calls == [] and again["rows"]["fast"]["reached"] == fast["reached"]


def test_time_to_quality_stops_at_the_deadline_and_the_next_call_continues_the_chunk(
    tmp_path, monkeypatch
):
    """A deadline 25 s into training (one second per iteration) stops the first row within its
    third chunk of 10, with that chunk neither evaluated nor counted, and starts no other row.
    The next call resumes that run to 30 iterations and reaches the target where an
    uninterrupted call does: 40 iterations, 80 training seconds."""
    from types import SimpleNamespace

    from metarl import reports, run
    from metarl.benchmarks.speed import time_to_quality as ttq
    from metarl.reports import Curve

    clock = [0.0]
    trained, calls = _fake_children(monkeypatch, clock)
    monkeypatch.setattr(ttq, "time", SimpleNamespace(time=lambda: clock[0], strftime=time.strftime))

    class Report:
        def __init__(self, iterations):
            self.value = -30.0 + 0.5 * iterations

        def curve(self, method):
            return Curve(method, "MAML", [0, 1, 2], [-40.0, self.value, self.value + 5])

    monkeypatch.setattr(reports, "read_report", lambda d: Report(trained[str(d)]))
    monkeypatch.setattr(run, "load_checkpoint",
                        lambda d: {"elapsed": 2.0 * trained[str(d)], "iteration": trained[str(d)],
                                   "cpu_elapsed": 3.0 * trained[str(d)]})  # fmt: skip
    options = {"fast": ["fisher_subsample=5"], "slow": []}
    # Stopped within its first chunk, a row has a run but no evaluation yet.
    early = ttq.bench_time_to_quality("navigation", tmp_path / "early", 10, 60, options=options,
                                      deadline=5.0)  # fmt: skip
    table = ttq.format_time_to_quality(early)
    assert "| fast | in progress, not yet evaluated |" in table
    assert "| slow | not started |" in table
    assert table == ttq.format_time_to_quality(
        ttq.read_time_to_quality(tmp_path / "early", 10, options)
    )  # what `--report-only` reads back says the same
    trained.clear()
    clock[0], calls[:] = 0.0, []
    first = ttq.bench_time_to_quality("navigation", tmp_path, 10, 60, options=options,
                                      deadline=25.0)  # fmt: skip
    fast, slow = first["rows"]["fast"], first["rows"]["slow"]
    assert trained == {str(tmp_path / "fast"): 25}
    assert [p["iterations"] for p in fast["points"]] == [10, 20] and fast["reached"] is None
    assert fast["in_progress"] and slow["in_progress"] and slow["points"] == []
    evaluated = [c for c in calls if c[0] == "evaluate"]
    assert len(evaluated) == 2  # after 10 and 20 iterations, not at the stop
    assert all("eval_reuse_baselines=true" in c for c in evaluated)  # baselines scored once
    table = ttq.format_time_to_quality(first)
    assert "| fast | in progress (20 iterations) |" in table
    assert "| slow | not started |" in table
    calls.clear()
    again = ttq.bench_time_to_quality("navigation", tmp_path, 10, 60, options=options,
                                      resume=True)  # fmt: skip
    assert calls[0][:6] == ["train", "navigation", "--resume", str(tmp_path / "fast"), "--set",
                            "iterations=30"]  # fmt: skip
    reached = again["rows"]["fast"]["reached"]
    assert reached["iterations"] == 40 and reached["seconds"] == 80.0
    assert "in_progress" not in again["rows"]["fast"]


def _point(iterations: int, score: float) -> dict:
    return {"iterations": iterations, "score": score, "seconds": 2.0 * iterations,
            "cpu_seconds": 3.0 * iterations, "return_2": None,
            "model": ["best", iterations]}  # fmt: skip


def test_a_stored_time_to_quality_table_says_which_rows_the_next_call_continues(tmp_path):
    """Read back without training, a row that reached the target keeps its time, one whose
    budget ran out says so, one the next call continues is "in progress", and rows the file
    lacks or holds with other settings are "not started" (even with a run directory, which the
    next call starts afresh), and one with a checkpoint but no evaluation is "in progress, not
    yet evaluated"; another interval is no table."""
    from metarl.benchmarks.speed import time_to_quality as ttq

    stored = {
        "experiment": "navigation", "target": "t", "threshold": 0.5, "every": 10,
        "max_iterations": 60, "machine": {},
        "rows": {
            "reached": {"settings": [], "points": [_point(10, 0.2), _point(20, 0.6)],
                        "reached": _point(20, 0.6)},
            "exhausted": {"settings": ["a=1"], "reached": None,
                          "points": [_point(i, 0.1) for i in range(10, 70, 10)]},
            "stopped": {"settings": ["b=1"], "points": [_point(10, 0.3)], "reached": None},
            "changed": {"settings": ["c=1"], "points": [_point(10, 0.4)], "reached": None},
            "unevaluated": {"settings": ["e=1"], "points": [], "reached": None},
            "unstarted": {"settings": ["f=1"], "points": [], "reached": None},
        },
    }  # fmt: skip
    (tmp_path / ttq.PROGRESS).write_text(json.dumps(stored))
    for name in ("unevaluated", "changed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pt").write_bytes(b"")
    options = {"reached": [], "exhausted": ["a=1"], "stopped": ["b=1"], "changed": ["c=2"],
               "absent": ["d=1"], "unevaluated": ["e=1"], "unstarted": ["f=1"]}  # fmt: skip
    table = ttq.format_time_to_quality(ttq.read_time_to_quality(tmp_path, 10, options))
    assert "| reached | **40 s** | 60 s | 20 | 0.6 | 0.6 (20) |" in table
    assert "| exhausted | not within 60 iterations |" in table
    assert "| stopped | in progress (10 iterations) | – | – | – | 0.3 (10) |" in table
    assert "| changed | not started |" in table and "| absent | not started |" in table
    assert "| unevaluated | in progress, not yet evaluated |" in table
    assert "| unstarted | not started |" in table
    assert ttq.read_time_to_quality(tmp_path, 5, options) is None
    assert ttq.read_time_to_quality(tmp_path / "elsewhere", 10, options) is None


def test_an_interrupted_time_to_quality_call_leaves_every_row_resumable(tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) while a row whose settings changed trains its first chunk, a call
    leaves a progress file with that row's new settings, so the next call continues the new run
    (it would delete it as an old-settings run otherwise), and the rows it had not reached yet
    as they were."""
    from metarl.benchmarks import runner
    from metarl.benchmarks.speed import time_to_quality as ttq

    stored = {
        "experiment": "navigation", "target": "t", "threshold": 0.5, "every": 10,
        "max_iterations": 60, "machine": {},
        "rows": {"changed": {"settings": ["c=1"], "points": [_point(10, 0.4)], "reached": None},
                 "later": {"settings": ["d=1"], "points": [_point(10, 0.3)], "reached": None}},
    }  # fmt: skip
    (tmp_path / ttq.PROGRESS).write_text(json.dumps(stored))
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "checkpoint.pt").write_bytes(b"")
    _fake_children(monkeypatch)
    child = runner.run_child

    def interrupted(args, *more, **options):
        child(args, *more, **options)  # the training wrote its checkpoint, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_child", interrupted)
    options = {"changed": ["c=2"], "later": ["d=1"]}
    with pytest.raises(KeyboardInterrupt):
        ttq.bench_time_to_quality("navigation", tmp_path, 10, 60, options=options, resume=True)
    table = ttq.format_time_to_quality(ttq.read_time_to_quality(tmp_path, 10, options))
    assert "| changed | in progress, not yet evaluated |" in table
    assert "| later | in progress (10 iterations) | – | – | – | 0.3 (10) |" in table


def test_time_to_quality_evaluates_a_kept_best_model_once(tmp_path, monkeypatch):
    """Evaluated every 10 iterations, a run whose kept best model is that of iteration 7 at 10
    and 20 and of iteration 28 at 30 and 40 is evaluated at 10 and 30 only; the points between
    carry the numbers of the same model. A run that tests its last model is evaluated each time."""
    from metarl import reports, run
    from metarl.benchmarks.speed import time_to_quality as ttq
    from metarl.reports import Curve

    trained, calls = _fake_children(monkeypatch)
    best = {10: 7, 20: 7, 30: 28, 40: 28}

    def tested(folder: str) -> int:
        return best[trained[folder]] if Path(folder).name == "best" else trained[folder]

    class Report:
        def __init__(self, folder):
            self.value = -40.0 + 0.1 * tested(folder)

        def curve(self, method):
            return Curve(method, "MAML", [0, 1, 2], [-40.0, self.value, self.value + 1])

    def checkpoint(folder):
        state = {"elapsed": 1.0, "iteration": trained[str(folder)], "config": {}}
        if Path(folder).name == "best":
            state["best"] = {"iteration": tested(str(folder))}
        return state

    monkeypatch.setattr(reports, "read_report", lambda d: Report(str(d)))
    monkeypatch.setattr(run, "load_checkpoint", checkpoint)
    result = ttq.bench_time_to_quality("navigation", tmp_path, 10, 40,
                                       options={"best": [], "last": []})  # fmt: skip
    # each evaluation follows the training it measures: (run, iterations trained then)
    evaluated = [(Path(now[1]).name, next(a for a in before if a.startswith("iterations=")))
                 for before, now in zip(calls, calls[1:]) if now[0] == "evaluate"]  # fmt: skip
    assert evaluated == [("best", "iterations=10"), ("best", "iterations=30"),
                         *(("last", f"iterations={i}") for i in (10, 20, 30, 40))]  # fmt: skip
    points = result["rows"]["best"]["points"]
    assert [p["model"] for p in points] == [["best", 7], ["best", 7], ["best", 28], ["best", 28]]
    assert [p["score"] for p in points] == pytest.approx([-39.3, -39.3, -37.2, -37.2])
    assert [p["return_2"] for p in points] == pytest.approx([-38.3, -38.3, -36.2, -36.2])
    last = result["rows"]["last"]["points"]
    assert [p["model"] for p in last] == [["last", i] for i in (10, 20, 30, 40)]
    assert [p["score"] for p in last] == pytest.approx([-39.0, -38.0, -37.0, -36.0])


def _record_time_to_quality_calls(monkeypatch) -> list[dict]:
    """Replace ``bench_time_to_quality`` by a recorder of its bound arguments (one dict per
    call), so a suite entry's wiring is checked without training."""
    import inspect

    from metarl.benchmarks.speed import time_to_quality

    declared, bound = inspect.signature(time_to_quality.bench_time_to_quality), []

    def record(*args, **kwargs):
        bound.append(declared.bind(*args, **kwargs).arguments)
        return {"experiment": "e", "target": "t", "every": 1, "rows": {}}

    monkeypatch.setattr(time_to_quality, "bench_time_to_quality", record)
    return bound


@pytest.mark.parametrize("suite", ["quick", "paper"])
@pytest.mark.parametrize(
    ("name", "experiment", "rows", "paper_gap"),
    [("halfcheetah-dir-remedies", "halfcheetah-dir", "REMEDIES", 0.645),
     ("ant-dir-remedies", "ant-dir", "ANT_REMEDIES", 0.950)],
)  # fmt: skip
def test_a_remedies_entry_trains_each_remedy_against_the_papers_gap(
    suite, name, experiment, rows, paper_gap, tmp_path, monkeypatch
):
    """``halfcheetah-dir-remedies`` and ``ant-dir-remedies``: every remedy from the same
    experiment, each row its own options, judged by the share of the gap the paper's data
    closes ((293.2 − 21.8) / (442.7 − 21.8) and (499.1 − 9.2) / (524.8 − 9.2))."""
    from metarl.benchmarks.speed import SPEED, time_to_quality
    from metarl.references import PAPER

    bound = _record_time_to_quality_calls(monkeypatch)
    workdir = tmp_path / suite / name
    oracle = tmp_path / suite / "baselines" / experiment / "oracle.pt"
    oracle.parent.mkdir(parents=True)
    oracle.write_bytes(b"")
    SPEED[name](suite, workdir)
    (arguments,) = bound
    assert arguments["experiment"] == experiment
    assert arguments["options"] == getattr(time_to_quality, rows)
    assert arguments["options"]["paper defaults (ReLU)"] == []
    assert arguments.get("resume", False) == (suite == "paper")
    target = time_to_quality.TARGETS[experiment]
    assert target.threshold == pytest.approx(PAPER[experiment].gap_closed)
    assert target.threshold == pytest.approx(paper_gap, abs=1e-3)
    from metarl.experiments import load_config

    for sets in arguments["options"].values():  # each row's settings are a valid config
        load_config(experiment, sets)


def test_the_two_step_navigation_target_is_the_papers_number_within_our_error_bar(
    tmp_path, monkeypatch
):
    """``time-to-navigation-2-steps`` trains navigation and judges each evaluation by its
    return after two steps plus its standard error against the paper's −3.3."""
    from metarl.benchmarks.speed import SPEED, time_to_quality
    from metarl.reports import Curve

    class Report:
        def __init__(self, mean, error):
            self.mean, self.error = mean, error

        def curve(self, method):
            return Curve(
                method, "MAML", [0, 1, 2], [-33.0, -11.0, self.mean], [2.0, 1.0, self.error]
            )

    score = time_to_quality.TARGETS["navigation-2-steps"].score
    threshold = time_to_quality.TARGETS["navigation-2-steps"].threshold
    assert threshold == -3.3
    reached, missed = score(Report(-3.57, 0.46)), score(Report(-3.9, 0.5))
    assert reached == pytest.approx(-3.11) and reached >= threshold
    assert missed == pytest.approx(-3.4) and missed < threshold
    bound = _record_time_to_quality_calls(monkeypatch)
    SPEED["time-to-navigation-2-steps"]("paper", tmp_path / "time-to-navigation-2-steps")
    (arguments,) = bound
    assert arguments["experiment"] == "navigation"
    assert arguments["target"] == "navigation-2-steps"
    rows = arguments["options"]
    assert list(rows) == ["fastest documented", "fastest documented, last model",
                          "paper defaults, last model", "paper defaults"]  # fmt: skip
    from metarl.experiments import load_config

    chosen = {name: load_config("navigation", sets).eval_model for name, sets in rows.items()}
    assert chosen == {"fastest documented": "best", "fastest documented, last model": "last",
                      "paper defaults, last model": "last", "paper defaults": "best"}  # fmt: skip
    assert rows["paper defaults, last model"] == [*rows["paper defaults"], "eval_model=last"]


def test_the_suite_gives_its_time_limit_to_the_benchmarks_that_train_for_hours(
    tmp_path, monkeypatch
):
    """``metarl bench --time-limit`` reaches a time-to-quality entry as its deadline, so the
    entry stops training there instead of running on for hours."""
    from metarl.benchmarks.suite import _run_speed

    bound = _record_time_to_quality_calls(monkeypatch)
    deadline = time.time() + 600.0
    attempted, interrupted = _run_speed({"time-to-navigation"}, "paper", deadline, tmp_path)
    (arguments,) = bound
    assert arguments["deadline"] == deadline and not interrupted
    assert "result" in attempted["time-to-navigation"]


def test_a_locomotion_time_to_quality_row_without_its_oracle_says_where_to_get_one(tmp_path):
    from metarl.benchmarks.speed import SPEED, BenchmarkUnavailable

    with pytest.raises(BenchmarkUnavailable) as refused:
        SPEED["time-to-halfcheetah-vel"]("paper", tmp_path / "paper" / "time-to-halfcheetah-vel")
    message = str(refused.value)
    assert str(tmp_path / "paper" / "baselines" / "halfcheetah-vel") in message
    assert "cp -r zoo/baselines/halfcheetah-vel" in message and "\n" not in message
    zoo = Path(__file__).resolve().parents[1] / "zoo"
    assert (zoo / "baselines" / "halfcheetah-vel" / "oracle.pt").exists()  # what the line offers
