"""The load benchmark at a small size: 50 clients polling and searching for about 10 s while
the server indexes, with no error answer and no failed request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fifty_clients_poll_and_search_while_indexing_without_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.load", "--clients", "50", "--seconds", "10", "--docs", "400"],
        cwd=ROOT,
        env=clean_env(TOKENIZERS_PARALLELISM="false"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors: 0" in proc.stdout, proc.stdout
    for route in ("GET /v1/jobs/{id}", "POST /v1/collections/{name}/search"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(route))
        assert int(line.split()[len(route.split())]) > 0, line
