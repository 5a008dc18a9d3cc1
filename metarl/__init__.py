"""metarl: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017) in PyTorch."""

from metarl import _openmp  # noqa: F401  (first: tunes OpenMP before anything imports torch)

# ruff: isort: split
from metarl.config import ConfigError
from metarl.experiments import LoadedRun, load_config, load_run
from metarl.run import RunError

__version__ = "0.1.0"
__all__ = ["ConfigError", "LoadedRun", "RunError", "load_config", "load_run", "__version__"]
