"""The benchmark compares like with like: every variant computes the same meta-gradient."""

from metarl.benchmarks.speed.core import check_same_meta_gradient


def test_benchmark_variants_agree():
    assert check_same_meta_gradient() < 1e-5
