"""The README's examples, run: a README example that stops working fails this test.

Convention (also stated in a comment at the top of README.md): a fenced block whose opening
line is ```` ```console ```` and that directly follows the line ``<!-- readme-test -->`` is run
on the embedded default. Blocks run in the order they appear, all in one temporary folder
(with ``demo/`` linked into it) and one data folder, so a later block can use what an earlier
one indexed. In a block, a line starting with ``$ `` is a command (a trailing backslash
continues it on the next line) and must exit with status 0; the lines after it are its
expected output. Each expected line must appear among the command's output lines, compared
with whitespace collapsed and every number masked (scores vary slightly between CPUs); a line
with ``...`` or ``…`` is compared up to the first of them, and a line that is only an
ellipsis is skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- readme-test -->"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Example:
    line: int
    command: str
    expected: list[str] = field(default_factory=list)


def examples(text: str) -> list[Example]:
    """The commands of every marked block, in order, with their expected output."""
    lines = text.splitlines()
    out: list[Example] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARKER and i + 1 < len(lines) and lines[i + 1] == "```console":
            i += 2
            while i < len(lines) and lines[i] != "```":
                line = lines[i]
                if line.startswith("$ "):
                    start, command = i + 1, line[2:]
                    while command.endswith("\\"):
                        i += 1
                        command = command[:-1] + " " + lines[i].strip()
                    out.append(Example(start, command))
                elif out and line.strip():
                    out[-1].expected.append(line)
                i += 1
        i += 1
    return out


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normal(line: str) -> str:
    return " ".join(_NUMBER.sub("#", line).split())


def missing(expected: list[str], output: str) -> list[str]:
    """The expected lines that no output line matches."""
    got = [normal(line) for line in output.splitlines()]
    lost = []
    for want in expected:
        cut = re.split(r"\.\.\.|…", want, maxsplit=1)[0]
        if not cut.strip():
            continue
        prefix = normal(cut)
        if cut != want and any(g.startswith(prefix) for g in got):
            continue
        if cut == want and prefix in got:
            continue
        lost.append(want)
    return lost


def test_the_readme_has_runnable_examples() -> None:
    found = examples(README.read_text(encoding="utf-8"))
    assert len(found) >= 5, "README.md lost its marked examples"
    assert any(e.command.startswith("embedq index demo/corpus.jsonl") for e in found)


# The demo corpus is indexed and the model loaded by each command: minutes on a busy CPU.
@pytest.mark.timeout(2400)
def test_readme_examples_work(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "demo").symlink_to(ROOT / "demo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "embedq"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m embedq.api.cli "$@"\n')
    wrapper.chmod(0o755)
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for example in examples(README.read_text(encoding="utf-8")):
        done = subprocess.run(
            ["bash", "-c", example.command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        where = f"README.md:{example.line}: $ {example.command}"
        assert done.returncode == 0, f"{where}\nexit {done.returncode}\n{done.stderr[-3000:]}"
        lost = missing(example.expected, done.stdout)
        assert not lost, f"{where}\nexpected lines not in the output: {lost}\n{done.stdout}"


def test_the_matching_rules() -> None:
    out = "  1. 0.6468  rail-long-01  touching the track. Magnetic levitation…\nwrote 3 vectors"
    assert missing(["  1. 0.6101  rail-long-01  touching the track. Magnetic…"], out) == []
    assert missing(["wrote 276 vectors", "..."], out) == []
    assert missing(["  1. 0.6  rail-014  The Darjeeling…"], out) != []
