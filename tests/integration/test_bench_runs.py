"""The benchmarks that guard performance targets run end to end on a few documents (their
figures are not asserted: a shared machine's timings mean nothing in a test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(600)
def test_pipeline_benchmark_runs_on_both_back_ends(shared_data: Path) -> None:
    out = bench("pipeline", "--docs", "40", "--runs", "1")
    assert "bare tokenizer" in out
    assert "sqlite, in process" in out and "postgresql + celery" in out
    assert "workers, first task to end" in out and "65536 tokens a task" in out
    assert "CPU seconds meanwhile: command" in out and "embed worker" in out
    assert out.count("ratio") == 3 + 3  # the run's three lines and their medians


@pytest.mark.timeout(600)
def test_whole_process_short_text_benchmark_runs(shared_data: Path) -> None:
    out = bench("throughput", "--case", "short", "--runs", "1")
    assert "case: short, 6000 texts" in out and "speed of (b) vs (a)" in out
