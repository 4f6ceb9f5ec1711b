"""How every ``embedq`` command is declared: a one-line summary, a description, and examples
shown under ``--help`` (``tests/unit/test_cli_help.py`` checks each command has them and each
option has help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal, keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(
    sub: Any,
    name: str,
    summary: str,
    examples: Sequence[str],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``description`` (or the summary) and examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description or summary[:1].upper() + summary[1:] + ".",
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    return parser


def json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")
