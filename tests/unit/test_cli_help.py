"""Every ``embedq`` command has a description and examples under ``--help``, every option and
argument has help text, and the completion script is one a shell can load."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.api.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


ALL = list(commands(build_parser()))


@pytest.mark.parametrize("path,parser", ALL, ids=[" ".join(p) or "embedq" for p, _ in ALL])
def test_every_command_has_a_description_and_examples(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    assert parser.description, path
    assert parser.epilog and parser.epilog.startswith("examples:\n"), path
    examples = parser.epilog.splitlines()[1:]
    assert examples and all("embedq" in line for line in examples[:1]), path
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)


def test_help_screens_differ_between_sibling_commands() -> None:
    helps = {" ".join(p): parser.format_help() for p, parser in ALL}
    assert helps["eval sts"] != helps["eval beir"]
    assert "--collection" in helps["eval beir"] and "--collection" not in helps["eval sts"]
    assert "--collection" in helps["embed"] and "--weighting" in helps["embed"]


def test_completion_script_and_completions() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = subprocess.run(
        [sys.executable, "-m", "embedq.api.cli", "completion", "bash"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "complete" in script and "embedq" in script


def test_shell_asking_for_completions_gets_the_commands(tmp_path: Path) -> None:
    out = tmp_path / "completions"
    line = "embedq jo"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    subprocess.run(
        [sys.executable, "-m", "embedq.api.cli"], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert out.read_text().split() == ["jobs"]
    line = "embedq eval "
    env.update(COMP_LINE=line, COMP_POINT=str(len(line)))
    subprocess.run(
        [sys.executable, "-m", "embedq.api.cli"], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert {"beir", "sts"} <= set(out.read_text().split())
