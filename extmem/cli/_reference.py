"""The command-line reference (docs/cli.md), generated from the parser so that the two never disagree.

python -m extmem.cli._reference > docs/cli.md
"""

from __future__ import annotations

import argparse
import os

from extmem.cli._parser import build_parser

HEADER = """# Command-line reference

Generated from the argument parser (`python -m extmem.cli._reference > docs/cli.md`); a test
checks that this page matches it. Library options appear in messages as their flags here.
"""


def _help(parser: argparse.ArgumentParser) -> str:
    """The parser's help at a fixed width of 100 columns, so the page does not depend on the terminal."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def render_reference() -> str:
    """The reference page: the top-level help, then each command's."""
    parser = build_parser()
    sections = [HEADER, "## extmem\n\n```\n" + _help(parser) + "\n```\n"]
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        sections.append(f"## extmem {name}\n\n```\n{_help(command)}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(render_reference(), end="")
