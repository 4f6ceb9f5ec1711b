"""Records a database cannot store (an id wider than its column, a NUL character) are errors of
their own line on PostgreSQL, through the command line and over HTTP: the job succeeds with
every good record indexed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import clean_env, embedq, write_jsonl
from tests.services import Process, embedq_process, free_port, fresh_pg_database, wait_http

pytestmark = pytest.mark.integration

GOOD = [{"id": f"good-{i}", "text": f"Good record number {i} about rivers."} for i in range(10)]
LONG_ID = "x" * 2000
BAD = [
    {"id": LONG_ID, "text": "An id that no id column holds."},
    {"id": "nul", "text": "A NUL \u0000 inside the text."},
]
# The two bad records sit between good ones: lines 4 and 9.
RECORDS = [*GOOD[:3], BAD[0], *GOOD[3:7], BAD[1], *GOOD[7:]]
EXPECTED_ERRORS = [
    (4, "id too long (2000 characters; at most 1024)"),
    (9, "NUL character (\\u0000) in text"),
]


@pytest.fixture(scope="module")
def pg_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("unstorable")
    with fresh_pg_database("embedq_unstorable") as url:
        env = clean_env(EMBEDQ_DATA_DIR=str(root / "data"), EMBEDQ_DATABASE_URL=url)
        done = embedq(env, "db", "upgrade")
        assert done.returncode == 0, done.stderr
        yield env


def _errors(errors: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted((e["line"], e["reason"]) for e in errors)


def test_cli_indexes_the_good_records_and_names_the_bad_lines(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "mixed.jsonl", RECORDS)
    proc = embedq(pg_env, "index", str(corpus), "-c", "cli", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"total": 10, "done": 10, "failed": 0}
    assert _errors(job["errors"]) == EXPECTED_ERRORS
    long_error = next(e for e in job["errors"] if e["line"] == 4)
    assert long_error["id"].startswith("xxx") and len(long_error["id"]) <= 1024
    found = embedq(pg_env, "search", "cli", "rivers", "-k", "50", "--json")
    assert found.returncode == 0, found.stderr
    assert sorted(h["id"] for h in json.loads(found.stdout)["hits"]) == sorted(
        r["id"] for r in GOOD
    )


@pytest.fixture(scope="module")
def server(pg_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("unstorable-api") / "server.log"
    proc: Process = embedq_process(["api", "--host", "127.0.0.1", "--port", str(port)], pg_env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        assert "unhandled error on" not in proc.output(), proc.output()[-4000:]


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish")


@pytest.mark.parametrize("route", ["documents", "uploads"])
def test_http_indexes_the_good_records_and_names_the_bad_lines(server: str, route: str) -> None:
    name = f"http-{route}"
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": name}).status_code in (200, 201)
        if route == "documents":
            response = client.post(f"/v1/collections/{name}/documents", json={"documents": RECORDS})
        else:
            body = "".join(json.dumps(r) + "\n" for r in RECORDS)
            response = client.post(
                f"/v1/collections/{name}/uploads",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            )
        assert response.status_code == 202, response.text
        job = _finished(client, response.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["progress"]["done"] == 10
        errors = client.get(f"/v1/jobs/{job['id']}/errors").json()["errors"]
        assert _errors(errors) == EXPECTED_ERRORS
        assert client.get(f"/v1/collections/{name}").json()["documents"] == 10
