"""``import metarl`` shortens OpenMP's spin-wait before torch loads, and leaves a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metarl._openmp import SPIN_COUNT, shorten_openmp_spin


def test_sets_the_spin_count_only_when_no_waiting_policy_was_chosen():
    environ: dict[str, str] = {}
    assert shorten_openmp_spin(environ) and environ == {"GOMP_SPINCOUNT": str(SPIN_COUNT)}
    for chosen in ({"GOMP_SPINCOUNT": "5"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        environ = dict(chosen)
        assert not shorten_openmp_spin(environ) and environ == chosen


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, str(SPIN_COUNT)), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "")],
)
def test_import_metarl_sets_it_before_torch_is_loaded(extra, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    probe = (
        "import sys, os; import metarl; "
        "print(os.environ.get('GOMP_SPINCOUNT', ''), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    # torch is loaded by the import (so the variable was in place before libgomp read it)
    assert out == [expected, "True"] if expected else out == ["True"]
