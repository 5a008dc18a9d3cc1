"""Importing metarl changes nothing outside it; the `metarl` command shortens OpenMP's spin-wait
before torch loads, and leaves a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metarl.runtime import SPIN_COUNT, shorten_openmp_spin


def test_sets_the_spin_count_only_when_no_waiting_policy_was_chosen():
    environ: dict[str, str] = {}
    assert shorten_openmp_spin(environ) and environ == {"GOMP_SPINCOUNT": str(SPIN_COUNT)}
    for chosen in ({"GOMP_SPINCOUNT": "5"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        environ = dict(chosen)
        assert not shorten_openmp_spin(environ) and environ == chosen


# Records, at the moment torch's own import starts, the variable and whether libgomp is mapped;
# at the end, the variable, the torch RNG's state against a fresh seed-0 state, and whether
# matplotlib chose a backend.
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
{code}
import torch
before = torch.get_rng_state()
{after}
rng = "same" if torch.equal(before, torch.get_rng_state()) else "changed"
backend = "pyplot" if "matplotlib.pyplot" in sys.modules else "none"
print(*seen[0], os.environ.get("GOMP_SPINCOUNT", "-"), rng, backend)
"""


def _probe(code: str, extra: dict[str, str], after: str = "") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    script = _PROBE.format(code=code, after=after)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1].split()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_importing_the_library_changes_nothing_outside_it():
    imports = "import metarl, metarl.core, metarl.envs, metarl.experiments"
    build = (
        "from metarl.experiments import load_config, get_experiment\n"
        "for name in ('sinusoid', 'omniglot-5w1s', 'navigation'):\n"
        "    get_experiment(name).build_model(load_config(name))\n"
        "from metarl.supervised import sinusoid_eval\n"
        "from metarl.rl import evaluate, view"
    )
    # No spin setting, the global RNG untouched by building models, no plotting backend.
    assert _probe(imports, {}, after=build) == ["-", "False", "-", "same", "none"]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_the_command_sets_the_spin_count_before_torch_and_libgomp_load():
    command = "from metarl.cli import main\nmain(['list'])"
    assert _probe(command, {})[:3] == [str(SPIN_COUNT), "False", str(SPIN_COUNT)]
    # a user's choice wins
    assert _probe(command, {"GOMP_SPINCOUNT": "5"})[:3] == ["5", "False", "5"]
    assert _probe(command, {"OMP_WAIT_POLICY": "ACTIVE"})[:3] == ["-", "False", "-"]
    # torch first: libgomp has read its environment already, so nothing is set
    assert _probe("import torch\n" + command, {})[:3] == ["-", "False", "-"]


def test_a_missing_extra_is_named_in_the_error():
    """Without MuJoCo (a base install), the locomotion tasks say which extra brings it."""
    code = (
        "import sys\n"
        "sys.modules['mujoco'] = None  # as if it were not installed\n"
        "import metarl\n"
        "from metarl.experiments import load_config\n"
        "load_config('navigation')  # the RL config and navigation need no MuJoCo\n"
        "from metarl.rl import evaluate\n"
        "try:\n"
        "    import metarl.envs.locomotion\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pip install 'metarl[rl]'" in out.stdout
