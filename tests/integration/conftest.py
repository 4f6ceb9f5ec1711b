"""Helpers for running the ``embedq`` command line as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def embedq(
    env: dict[str, str], *args: str, stdin: bytes | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedq.api.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_json(env: dict[str, str], *args: str) -> Any:
    proc = embedq(env, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    out.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra})
    return out


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"))
