"""Benchmarks: the suite behind ``metarl bench`` (quality against the papers, speed side by side).

registry (what runs) · runner (child processes) · staleness (when to re-evaluate) · collect
(results and verdicts) · speed (side-by-side measurements) · report (``BENCHMARKS.md``) · suite
(the orchestrator).
"""
