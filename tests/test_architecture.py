"""The layers of docs/architecture.md: a module imports only from its own layer or below.

Read from the source (every ``import`` statement, also those inside functions), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

LAYERS: list[tuple[str, ...]] = [
    ("metarl.core",),
    ("metarl.config", "metarl.budget", "metarl.run", "metarl.loop", "metarl.runtime",
     "metarl.seeding", "metarl.reports", "metarl.results_table",
     "metarl.gap", "metarl.references", "metarl.plots", "metarl.envs", "metarl.configs",
     "metarl.distributed"),
    ("metarl.algorithms",),
    ("metarl.rl", "metarl.supervised"),
    ("metarl.experiments", "metarl.api", "metarl.trained", "metarl.analysis"),
    ("metarl.benchmarks",),
    ("metarl.cli", "metarl.commands", "metarl.plugins", "metarl.__main__"),
]  # fmt: skip
"""Lowest first. ``metarl/__init__.py`` (the public face, imported lazily) is above them all."""

SIBLINGS = [("metarl.rl", "metarl.supervised")]
"""Packages of one layer that must not import each other."""

NEVER = {
    "metarl.rl.trainer": ("metarl.rl.evaluate", "metarl.rl.diagnostics", "metarl.rl.view",
                          "metarl.rl.maml_trpo"),
    "metarl.supervised.trainer": ("metarl.supervised.sinusoid_eval",
                                  "metarl.supervised.classification_eval"),
}  # fmt: skip
"""Within a layer: a training loop only orchestrates; what evaluates or diagnoses a model
imports the algorithm, never the loop."""


def _module_name(path: Path) -> str:
    if path.parts[0] == "envs":  # installed as metarl.envs
        parts = ("metarl", *path.with_suffix("").parts)
    else:
        parts = path.with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "metarl" or name.startswith("metarl.")}


def _owner(module: str) -> str | None:
    """The layer entry (package or module) that ``module`` belongs to."""
    for layer in LAYERS:
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                return prefix
    return None


def _layer(module: str) -> int:
    owner = _owner(module)
    assert owner is not None, f"{module} belongs to no layer: add it to LAYERS and the docs"
    return next(i for i, layer in enumerate(LAYERS) if owner in layer)


SOURCES = sorted(
    p.relative_to(ROOT)
    for folder in ("metarl", "envs")
    for p in (ROOT / folder).rglob("*.py")
    if p.relative_to(ROOT) != Path("metarl/__init__.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=str)
def test_imports_never_run_upward(path: Path) -> None:
    module = _module_name(path)
    own, owner = _layer(module), _owner(module)
    for imported in sorted(_imports(ROOT / path)):
        if imported == "metarl":
            raise AssertionError(f"{module} imports the package face `metarl`; import the module")
        assert _layer(imported) <= own, (
            f"{module} (layer {own}) imports {imported} (layer {_layer(imported)}): upward"
        )
        assert module not in NEVER.get(imported, ()), f"{module} imports the loop {imported}"
        for pair in SIBLINGS:
            if owner in pair:
                other = pair[1 - pair.index(owner)]
                assert _owner(imported) != other, f"{module} imports its sibling {imported}"


def test_the_check_can_fail() -> None:
    """The rule itself, on made-up modules: a lower layer importing a higher one is caught."""
    assert _layer("metarl.core.adapt") < _layer("metarl.rl.trainer") < _layer("metarl.cli")
    assert _owner("metarl.rl.view") == "metarl.rl" and _owner("metarl.rlx") is None
    assert _module_name(Path("envs/navigation.py")) == "metarl.envs.navigation"
    assert _module_name(Path("metarl/rl/__init__.py")) == "metarl.rl"
