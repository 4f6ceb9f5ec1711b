"""Listing and deleting collections, listing jobs in pages, job ids by prefix and job
callbacks, as a user sees them: a real ``embedq api`` server and the real ``embedq`` command
line on one data folder, on SQLite and on PostgreSQL (no broker: the server runs jobs)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import clean_env, embedq, ok_json
from tests.services import (
    Process,
    embedq_process,
    free_port,
    fresh_pg_database,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration
DOCS = {
    "bees": "Honeybees perform a waggle dance to tell the hive where the flowers are.",
    "rail": "The night train crossed the Alps through a tunnel fifteen kilometres long.",
    "coffee": "Espresso is brewed by forcing hot water through finely ground coffee beans.",
    "owls": "Owls hunt mice at night, hearing them move beneath the snow.",
}


@dataclass
class Server:
    env: dict[str, str]
    data_dir: Path
    http: httpx.Client
    proc: Process


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"listing-{request.param}")
    with _database(request.param, tmp) as db:
        env = clean_env(
            EMBEDQ_DATA_DIR=str(tmp / "data"),
            EMBEDQ_CALLBACK_POLL_S="0.2",
            EMBEDQ_CALLBACK_BACKOFF_S="0.3",
            **db,
        )
        if db:
            assert embedq(env, "db", "upgrade").returncode == 0
        port = free_port()
        proc = embedq_process(["api", "--port", str(port)], env, tmp / "api.log")
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthz", timeout=180)
            with httpx.Client(base_url=url, timeout=120) as http:
                yield Server(env, tmp / "data", http, proc)
        finally:
            proc.stop()
            assert "Traceback" not in proc.output(), proc.output()[-4000:]


class _database:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.pg: Any = None

    def __enter__(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {}
        self.pg = fresh_pg_database("embedq_listing")
        return {"EMBEDQ_DATABASE_URL": self.pg.__enter__()}

    def __exit__(self, *exc: Any) -> None:
        if self.pg is not None:
            self.pg.__exit__(*exc)


def wait_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    job = wait_until(finished, 300, f"job {job_id}", interval=0.2)
    assert isinstance(job, dict)
    return job


def index(http: httpx.Client, name: str, docs: dict[str, str], **extra: Any) -> str:
    assert http.post("/v1/collections", json={"name": name}).status_code in (200, 201)
    body = {"documents": [{"id": k, "text": v} for k, v in docs.items()], **extra}
    response = http.post(f"/v1/collections/{name}/documents", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def all_pages(http: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page[key]
        cursor = page["next"]
        if cursor is None:
            return items


def test_collections_and_jobs_are_listed_in_pages_over_http_and_in_the_cli(
    server: Server,
) -> None:
    http, env = server.http, server.env
    jobs = [index(http, name, DOCS) for name in ("list-a", "list-b", "list-c")]
    for job_id in jobs:
        assert wait_job(http, job_id)["status"] == "succeeded"

    listed = all_pages(http, "/v1/collections", "collections", limit=2)
    mine = [c for c in listed if c["name"].startswith("list-")]
    assert [c["name"] for c in mine] == ["list-a", "list-b", "list-c"]
    for c in mine:
        assert (c["documents"], c["chunks"], c["dim"], c["index"]) == (4, 4, 384, "Flat")
        assert c["indexed"] == 4 and c["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    cli = ok_json(env, "collections", "list", "--json")
    assert [c for c in cli["collections"] if c["name"].startswith("list-")] == mine
    assert ok_json(env, "collections", "show", "list-b", "--json")["chunks"] == 4

    paged = all_pages(http, "/v1/jobs", "jobs", limit=1, kind="index", status="succeeded")
    ids = [j["id"] for j in paged]
    assert ids[:3] == jobs[::-1]  # newest first
    assert len(ids) == len(set(ids))
    only_b = ok_json(env, "jobs", "--collection", "list-b", "--json")
    assert [j["id"] for j in only_b["jobs"]] == [jobs[1]] and only_b["next"] is None
    first = ok_json(env, "jobs", "--limit", "1", "--kind", "index", "--json")
    assert first["jobs"][0]["id"] == ids[0] and first["next"]
    second = ok_json(
        env, "jobs", "--limit", "1", "--kind", "index", "--cursor", first["next"], "--json"
    )
    assert second["jobs"][0]["id"] == ids[1]
    assert http.get("/v1/jobs", params={"status": "finished"}).status_code == 422
    assert http.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422
    assert http.get("/v1/collections", params={"limit": 0}).status_code == 422

    # Job ids by unique prefix in the CLI; an unknown or ambiguous one is one line, status 2.
    shown = ok_json(env, "jobs", "show", jobs[2][:10], "--json")
    assert shown["id"] == jobs[2] and shown["status"] == "succeeded"
    missing = embedq(env, "jobs", "show", "0000000000")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "embedq: error: no job '0000000000'"


def test_delete_removes_everything_and_the_name_is_free_at_once(server: Server) -> None:
    http, env = server.http, server.env
    assert wait_job(http, index(http, "doomed", DOCS))["status"] == "succeeded"
    folder = server.data_dir / "indexes" / "doomed"
    assert (folder / "current.json").is_file()

    response = http.delete("/v1/collections/doomed")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "doomed", "documents": 4, "chunks": 4, "cancelled_jobs": []}
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir() if "doomed" in p.name] == []
    assert http.get("/v1/collections/doomed").status_code == 404
    assert http.delete("/v1/collections/doomed").status_code == 404
    search = http.post("/v1/collections/doomed/search", json={"query": "bees"})
    assert search.status_code == 404
    assert "doomed" not in [c["name"] for c in all_pages(http, "/v1/collections", "collections")]
    gone = embedq(env, "collections", "show", "doomed")
    assert gone.returncode == 2 and "no collection named 'doomed'" in gone.stderr

    # The same name at once, with other documents: nothing of the old collection shows.
    fresh = {"glacier": "Glaciers carved deep fjords along the Norwegian coast."}
    assert wait_job(http, index(http, "doomed", fresh))["status"] == "succeeded"
    hits = http.post("/v1/collections/doomed/search", json={"query": "bees", "k": 10}).json()
    assert [h["id"] for h in hits["hits"]] == ["glacier"]

    # And from the command line.
    proc = embedq(env, "collections", "delete", "doomed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "deleted collection doomed: 1 documents, 1 chunks"
    assert not folder.exists()
    assert http.get("/v1/collections/doomed").status_code == 404


class Receiver:
    """An HTTP endpoint that records each POST; the first ``fail`` answers are 503."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                code = 503 if len(receiver.calls) < receiver.fail else 200
                receiver.calls.append((code, dict(self.headers), body))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_callback_is_posted_once_when_the_job_finishes_after_retries(server: Server) -> None:
    http = server.http
    receiver = Receiver(fail=2)
    try:
        job_id = index(http, "called", DOCS, callback_url=receiver.url)
        job = wait_job(http, job_id)
        wait_until(lambda: any(c[0] == 200 for c in receiver.calls), 60, "the callback")
        time.sleep(2)  # room for a second delivery, which must not come
        assert [c[0] for c in receiver.calls] == [503, 503, 200]
        _, headers, body = receiver.calls[-1]
        assert headers["x-embedq-job-id"] == job_id and headers["x-embedq-attempt"] == "3"
        assert body["id"] == job_id and body["status"] == "succeeded"
        assert body["progress"] == job["progress"] == {"total": 4, "done": 4, "failed": 0}

        analysis = http.post(
            "/v1/jobs",
            json={"kind": "words", "sentence": "a bank by the bank", "callback_url": receiver.url},
        )
        assert analysis.status_code == 202, analysis.text
        other = analysis.json()["job_id"]
        wait_until(lambda: any(c[2]["id"] == other for c in receiver.calls), 120, "callback 2")
        assert [c[2]["status"] for c in receiver.calls if c[2]["id"] == other] == ["succeeded"]
    finally:
        receiver.close()
    for bad in ("ftp://example.com/x", "not a url", 5):
        response = http.post(
            "/v1/collections/called/documents",
            json={"documents": [{"id": "x", "text": "y"}], "callback_url": bad},
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]
