"""``python -m bench``: names resolve to modules, imported only when run (the GPU machine
has torch and transformers but neither FAISS nor the service's packages)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from bench.__main__ import BENCHES, TOOLS
from tests.unit.imports import loaded_after


def test_every_name_is_a_module_with_main() -> None:
    for module in [*BENCHES, *TOOLS.values()]:
        assert callable(importlib.import_module(f"bench.{module}").main)


def test_the_precision_benchmark_needs_no_faiss_or_service_packages() -> None:
    code = "import bench.__main__, bench.precision"
    assert loaded_after(code, ["faiss", "sqlalchemy", "celery", "fastapi"]) == []


def test_unknown_name_prints_usage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nonsense"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0
    assert "usage: python -m bench [throughput|precision" in out.stderr
