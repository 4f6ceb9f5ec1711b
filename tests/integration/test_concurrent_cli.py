"""Two ``embedq index`` runs started together on a fresh data folder, into one new collection:
both upgrade the schema and create the collection at the same moment, and both must succeed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, embedq, write_jsonl

pytestmark = pytest.mark.integration


def test_two_concurrent_index_runs_into_one_new_collection(
    env: dict[str, str], tmp_path: Path
) -> None:
    files = [
        write_jsonl(
            tmp_path / f"part{p}.jsonl",
            [{"id": f"p{p}-{i}", "text": f"Part {p}, document {i} about lakes."} for i in range(8)],
        )
        for p in (1, 2)
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedq.api.cli",
                "index",
                str(f),
                "-c",
                "shared",
                "--json",
                "-q",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert json.loads(out)["status"] == "succeeded"
    found = embedq(env, "search", "shared", "lakes", "-k", "50", "--json")
    assert found.returncode == 0, found.stderr
    ids = sorted(hit["id"] for hit in json.loads(found.stdout)["hits"])
    assert ids == sorted(f"p{p}-{i}" for p in (1, 2) for i in range(8))
