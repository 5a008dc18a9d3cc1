"""Test-session setup."""

import os

# MuJoCo chooses its OpenGL backend when it is first imported: render offscreen (tests/test_view).
os.environ.setdefault("MUJOCO_GL", "egl")

import metarl  # noqa: E402, F401  (before any test imports torch: the CLI's OpenMP settings)
