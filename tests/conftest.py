"""Test-session setup."""

import os

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
