"""The README's and the docs' commands stay true: every `metarl` subcommand they show is run by
CI (`.ci/readme-commands`, progress bars on), and their Python blocks run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(language: str, documents: list[Path] = DOCUMENTS) -> list[str]:
    found = []
    for path in documents:
        found += re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return found


def test_every_documented_subcommand_runs_in_ci():
    documented = {
        match
        for block in _blocks("bash")
        for match in re.findall(r"^metarl ([a-z-]+)", block, flags=re.MULTILINE)
    }
    script = (ROOT / ".ci" / "readme-commands").read_text()
    ran = set(re.findall(r"^m ([a-z-]+)", script, flags=re.MULTILINE))
    ran |= set(re.findall(r"\bm (view) ", script))
    ran |= set(re.findall(r"^mnist ([a-z-]+)", script, flags=re.MULTILINE))
    assert documented, "the README shows no metarl command"
    assert documented <= ran, f"not run by CI: {sorted(documented - ran)}"


WITH_PYTHON = [path for path in DOCUMENTS if _blocks("python", [path])]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A small sinusoid run at the path the documents' blocks load (trained once)."""
    from metarl.cli import main

    folder = tmp_path_factory.mktemp("docs")
    run = folder / "runs" / "sinusoid-20261122-020500"
    assert main(["train", "sinusoid", "--out", str(run), "--no-progress",
                 "--set", "iterations=20", "log_every=10", "checkpoint_every=20"]) == 0  # fmt: skip
    return folder


def test_the_documents_have_python_blocks():
    assert ROOT / "README.md" in WITH_PYTHON and len(WITH_PYTHON) >= 3


@pytest.mark.parametrize("document", WITH_PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_run(trained_run, monkeypatch, document):
    """Each ```python block runs as written (a block that needs a trained run gets one)."""
    monkeypatch.chdir(trained_run)
    for block in _blocks("python", [document]):
        exec(compile(block, str(document), "exec"), {})  # noqa: S102 - the documents' own code


def _documented_command_lines() -> list[str]:
    """Every `metarl ...` command line of the bash blocks (continuations joined, comments and
    environment assignments removed; `torchrun ... -m metarl` counted as metarl)."""
    lines = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line)
            line = re.sub(r"^torchrun\b.*?-m metarl\b", "metarl", line)
            if line.startswith("metarl "):
                lines.append(line)
    return lines


def test_every_documented_command_line_parses_and_its_config_validates():
    """Each documented command is read by the parser as written, and a `train` or `config`
    command's experiment and `--set` overrides validate (so no key, value or flag in the docs
    can rot), without running anything long."""
    import shlex

    from metarl.cli import build_parser
    from metarl.experiments import load_config

    parser = build_parser()
    lines = _documented_command_lines()
    assert len(lines) > 20
    checked = 0
    for line in lines:
        words = shlex.split(line)[1:]
        if any("<" in w or "..." in w or w in ("EXP", "RUN", "NAME", "DIR") for w in words):
            continue  # a placeholder in a usage line
        try:
            args = parser.parse_args(words)
        except SystemExit as e:
            raise AssertionError(f"the parser refuses a documented command: {line}") from e
        if args.command in ("train", "config") and not getattr(args, "resume", None):
            load_config(args.experiment, args.set)
            checked += 1
    assert checked > 5
