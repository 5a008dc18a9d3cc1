"""MkDocs hook: the command-line page is generated from the parser, so it cannot go stale."""

from __future__ import annotations

import argparse

MARKER = "<!-- generated: the parser's help of every command -->"


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help().replace("```", "'''")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs API
    if MARKER not in markdown:
        return markdown
    from metarl.cli import build_parser

    parser = build_parser()
    sections = [f"## metarl\n\n```text\n{_help(parser)}```\n"]
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subparsers.choices.items():
        sections.append(f"## metarl {name}\n\n```text\n{_help(sub)}```\n")
    return markdown.replace(MARKER, "\n".join(sections))
