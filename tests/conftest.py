"""Test-session setup."""

import os

# MuJoCo chooses its OpenGL backend when it is first imported: render offscreen (tests/test_view).
os.environ.setdefault("MUJOCO_GL", "egl")
