"""``--import``: load a user's module for what it registers (an experiment, an algorithm,
an environment) before a command runs, as ``python -m`` or ``python file.py`` would find it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path


def import_plugin(module: str) -> None:
    """Import ``module`` for what it registers: a module name (found from the current folder
    too, as ``python -m`` finds it), a package folder, or a ``.py`` file (which may import the
    modules beside it, as ``python file.py`` may).

    Raises:
        ImportError: no such module or file (its own import errors pass through as they are).
    """
    path = Path(module)
    if not module.endswith(".py"):
        if path.is_dir():  # a package folder: imported by name, from its parent folder
            _search_first(path.resolve().parent)
            importlib.import_module(path.resolve().name)
            return
        _search_first(Path.cwd())
        importlib.import_module(module)
        return
    if not path.is_file():
        raise ImportError(f"--import {module}: no such file")
    _search_first(path.resolve().parent)
    spec = importlib.util.spec_from_file_location(f"metarl_plugin_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py path always has both
    plugin = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = plugin  # dataclasses and pickling look their module up
    spec.loader.exec_module(plugin)


def _search_first(folder: Path) -> None:
    """Put ``folder`` first on ``sys.path`` (once, however many ``--import`` name it)."""
    entry = str(folder)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
