"""The benchmark compares like with like: every variant computes the same meta-gradient."""

from metarl.benchmarks.speed.core import check_same_meta_gradient


def test_benchmark_variants_agree():
    assert check_same_meta_gradient() < 1e-5


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


def test_the_family_table_reads_a_diverged_mean_as_diverged():
    from metarl.benchmarks.speed.family_budget import format_family_budget

    point = {"seconds": 2.0, "iterations": 400,
             "mse": {k: [3.0, 0.5, float("nan")] for k in ("K=5", "K=10", "K=20")}}  # fmt: skip
    row = {"points": [point], "peak_mib": 40.0, "settings": {}}
    result = {"budget_s": 2.0, "eval_tasks": 20, "pretrained": {}, "rows": {"Meta-SGD": row}}
    table = format_family_budget(result)
    assert "| Meta-SGD | 0.500 \\| diverged |" in table and "| 400 | 5.0 ms | 40 MiB |" in table
    header, rule = table.splitlines()[2:4]
    assert header.count(" | ") + 1 == rule.count("|") - 1  # as many columns as the rule has
