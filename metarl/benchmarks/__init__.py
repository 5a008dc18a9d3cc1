"""Benchmarks: the suite of :mod:`metarl.benchmarks.suite` (``metarl bench``) and the speed
measurements it runs, each side by side in one process (sinusoid, omniglot, locomotion)."""
