"""How a command leaves: without the interpreter's teardown when nothing else runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from embedq.api import cli


class _Left(Exception):
    def __init__(self, how: str, code: int) -> None:
        super().__init__(how, code)
        self.how, self.code = how, code


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    done: list[str] = []

    def fast(code: int) -> None:
        raise _Left("fast", code)

    def ordinary(code: Any = 0) -> None:
        raise _Left("ordinary", code)

    monkeypatch.setattr(cli.os, "_exit", fast)
    monkeypatch.setattr(cli.sys, "exit", ordinary)
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: done.append("exit handlers"))
    monkeypatch.setattr(cli, "close_runtime", lambda: done.append("connections closed"))
    return done


def test_a_short_command_leaves_at_once_after_closing_and_flushing(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_command", "search")
    with pytest.raises(_Left) as left:
        cli.leave(3)
    assert (left.value.how, left.value.code) == ("fast", 3)
    assert calls == ["connections closed", "exit handlers"]


@pytest.mark.parametrize("command", sorted(cli.LONG_RUNNING))
def test_a_command_that_runs_until_stopped_exits_the_ordinary_way(
    calls: list[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr(cli, "_command", command)
    with pytest.raises(_Left) as left:
        cli.leave(0)
    assert left.value.how == "ordinary" and calls == []


def test_running_threads_are_waited_for_by_the_ordinary_exit(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_command", "index")
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        with pytest.raises(_Left) as left:
            cli.leave(0)
    finally:
        release.set()
        worker.join()
    assert left.value.how == "ordinary" and calls == []


def test_a_command_run_as_a_program_prints_everything_and_keeps_its_exit_status() -> None:
    # A bad setting is named on stderr with status 2 (it once ended the import in a traceback).
    proc = subprocess.run(
        [sys.executable, "-m", "embedq.api.cli", "jobs"],
        env={"EMBEDQ_PUBLISH_ROWS": "not a number", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "EMBEDQ_PUBLISH_ROWS" in proc.stderr
