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


# Records, at the moment torch's own import starts, the variable and whether libgomp is mapped.
_PROBE = """
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            maps = open("/proc/self/maps").read()
            seen.append((os.environ.get("GOMP_SPINCOUNT", "-"), "libgomp" in maps))
        return None
sys.meta_path.insert(0, Spy())
{imports}
print(*seen[0], os.environ.get("GOMP_SPINCOUNT", "-"))
"""


def _probe(imports: str, extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = _PROBE.format(imports=imports)
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
@pytest.mark.parametrize("module", ["metarl", "metarl.cli", "metarl.envs"])
def test_the_variable_is_in_place_before_torch_and_libgomp_load(module):
    assert _probe(f"import {module}", {}) == [str(SPIN_COUNT), "False", str(SPIN_COUNT)]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_a_user_choice_wins_and_torch_first_sets_nothing():
    assert _probe("import metarl", {"GOMP_SPINCOUNT": "5"}) == ["5", "False", "5"]
    assert _probe("import metarl", {"OMP_WAIT_POLICY": "ACTIVE"}) == ["-", "False", "-"]
    # torch first: libgomp has read its environment already, so metarl leaves it alone
    assert _probe("import torch, metarl", {}) == ["-", "False", "-"]
