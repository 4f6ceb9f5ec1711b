"""``bench/cpu.py``: CPU seconds of a stack's processes by role, from ``/proc``."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.cpu import Sample, line, role, sample, spent

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_roles_come_from_the_command_line() -> None:
    assert role("/venv/bin/python -m embedq.api.cli worker -Q embed --loglevel WARNING") == (
        "embed worker"
    )
    assert role("python -m embedq.api.cli worker -Q index") == "index writer"
    assert role("postgres: 16/main: postgres embedq_bench 127.0.0.1(5432) idle") == "postgresql"
    assert role("python -m embedq.api.cli index corpus.jsonl") is None


def test_spent_counts_by_role_and_new_processes_from_zero() -> None:
    before = Sample({1: ("postgresql", 1.0), 2: ("embed worker", 5.0)}, children=2.0)
    after = Sample({1: ("postgresql", 1.5), 2: ("embed worker", 7.0), 3: ("postgresql", 0.25)}, 3.5)
    assert spent(before, after) == {"command": 1.5, "postgresql": 0.75, "embed worker": 2.0}
    assert line({"command": 1.5, "redis": 0.001}, wall=2.0).startswith(
        "CPU seconds meanwhile: command 1.50 (of "
    )


def test_a_process_that_burns_cpu_is_counted_under_its_role() -> None:
    before = sample()
    child = subprocess.Popen([sys.executable, "-c", BURN, "worker", "-Q", "embed"])
    deadline = time.monotonic() + 10
    seen = sample()  # while it runs: read from /proc (once it has its own command line)
    while child.pid not in seen.by_process and time.monotonic() < deadline:
        seen = sample()
    child.wait(30)
    after = sample()  # waited for: counted as a child of this process
    assert child.pid in seen.by_process and seen.by_process[child.pid][0] == "embed worker"
    assert spent(before, after)["command"] >= 0.25
