"""Test-session setup."""

import os
from collections.abc import Callable
from typing import Any

# MuJoCo chooses its OpenGL backend when it is first imported: render offscreen (tests/test_view).
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """One torch thread during the test (worker threads, and small ops that two threads only
    slow down), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record_saves(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[int]]:
    """``record_saves(trainer)`` (a trainer module): the list, filled as training runs, of the
    iterations at which it writes its checkpoint; the checkpoints are still written."""

    def record(trainer: Any) -> list[int]:
        seen: list[int] = []
        save = trainer.atomic_torch_save

        def recording(state: dict[str, Any], path: Any) -> None:
            seen.append(state["iteration"])
            save(state, path)

        monkeypatch.setattr(trainer, "atomic_torch_save", recording)
        return seen

    return record


_SKIPPED: list[str] = []
"""Why each skipped test or module skipped, in this session."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1]}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped (importorskip at its top)
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1]}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``METARL_NO_SKIPS=1`` (CI, where every dataset and package is installed) a skipped
    test fails the run: a test that needs Omniglot or MNIST must not pass by not running."""
    if os.environ.get("METARL_NO_SKIPS") != "1" or exitstatus != pytest.ExitCode.OK:
        return
    if _SKIPPED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nMETARL_NO_SKIPS=1: {len(_SKIPPED)} test(s) skipped:", *_SKIPPED, sep="\n")
