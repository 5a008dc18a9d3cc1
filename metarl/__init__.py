"""metarl: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017) in PyTorch.

Importing ``metarl`` is cheap: the public names below load on first use, and the only thing it
does outside the package is register the task environments with gymnasium
(``gymnasium.make("metarl/AntGoal-v0")``), which loads no simulator. For the command line's
speed settings call :func:`metarl.runtime.tune_process` before importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metarl import envs as envs  # registers the environments (cheap: no MuJoCo)

__version__ = "0.1.0"

_PUBLIC = {
    "ConfigError": "metarl.config",
    "DataError": "metarl.supervised.data.files",
    "RunError": "metarl.run",
    "EvalReport": "metarl.reports",
    "ReportError": "metarl.reports",
    "read_report": "metarl.reports",
    "load_config": "metarl.experiments",
    "LoadedRun": "metarl.trained",
    "PolicyAdaptation": "metarl.trained",
    "Training": "metarl.api",
    "evaluate": "metarl.api",
    "load_run": "metarl.trained",
    "train": "metarl.api",
}
__all__ = [
    "ConfigError", "DataError", "EvalReport", "LoadedRun", "PolicyAdaptation", "ReportError",
    "RunError", "Training", "__version__", "evaluate", "load_config", "load_run", "read_report",
    "train",
]  # fmt: skip

if TYPE_CHECKING:
    from metarl.api import Training, evaluate, train
    from metarl.config import ConfigError
    from metarl.experiments import load_config
    from metarl.reports import EvalReport, ReportError, read_report
    from metarl.run import RunError
    from metarl.supervised.data.files import DataError
    from metarl.trained import LoadedRun, PolicyAdaptation, load_run


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names load lazily, so list them for dir() and tab completion.
    return sorted([*__all__, "envs"])
