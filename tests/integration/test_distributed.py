"""The distributed stack for real: PostgreSQL, Redis, two embed workers, the index writer,
the HTTP API and Flower, each its own process started as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from embedq.storage.index_store import IndexStore
from tests.integration.conftest import clean_env, embedq, write_jsonl
from tests.services import (
    ROOT,
    Process,
    embedq_process,
    free_port,
    fresh_pg_database,
    redis_db,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration
DEMO = ROOT / "demo" / "corpus.jsonl"
AUTH = ("flower", "secret-for-tests")


@dataclass
class Stack:
    env: dict[str, str]
    db_url: str
    data_dir: Path
    api: str
    flower: str
    workers: dict[str, Process] = field(default_factory=dict)

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params).all())
        finally:
            engine.dispose()


def _ping(broker: str) -> list[Any]:
    from celery import Celery

    control = Celery(broker=broker)
    try:
        return list(control.control.ping(timeout=1.0))
    finally:
        control.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with fresh_pg_database("embedq_dist") as db_url, redis_db() as broker:
        env = clean_env(
            EMBEDQ_DATA_DIR=str(tmp / "data"),
            EMBEDQ_DATABASE_URL=db_url,
            EMBEDQ_BROKER_URL=broker,
            EMBEDQ_BATCH_DOCS="8",
            FLOWER_BASIC_AUTH=":".join(AUTH),
        )
        assert embedq(env, "db", "upgrade").returncode == 0
        api_port, flower_port = free_port(), free_port()
        procs = {
            "embed-1": embedq_process(["worker", "-Q", "embed"], env, tmp / "embed-1.log"),
            # The second runs two tasks at once on threads, as the GPU default does.
            "embed-2": embedq_process(
                ["worker", "-Q", "embed"], {**env, "EMBEDQ_EMBED_THREADS": "2"}, tmp / "e2.log"
            ),
            "index": embedq_process(["worker", "-Q", "index"], env, tmp / "index.log"),
            "default": embedq_process(["worker", "-Q", "default"], env, tmp / "default.log"),
            "api": embedq_process(["api", "--port", str(api_port)], env, tmp / "api.log"),
            "flower": embedq_process(["flower", "--port", str(flower_port)], env, tmp / "fl.log"),
        }
        stack = Stack(
            env,
            db_url,
            tmp / "data",
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{flower_port}",
            procs,
        )
        try:
            wait_http(f"{stack.api}/healthz")
            wait_http(f"{stack.flower}/api/workers", auth=AUTH)
            wait_until(lambda: len(_ping(broker)) >= 4, 120, "four workers to answer a ping")
            yield stack
        finally:
            for name, proc in procs.items():
                proc.stop()
                if "Traceback" in proc.output():
                    print(f"--- {name} log ---\n{proc.output()[-4000:]}")


def demo_docs(start: int, count: int) -> list[dict[str, Any]]:
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[start : start + count]]


def test_api_job_runs_on_the_workers_and_each_chunk_exists_once(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.api, timeout=60)
    assert client.post("/v1/collections", json={"name": "dist"}).status_code == 201
    docs = [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in demo_docs(0, 80)]
    bad = [{"id": "no-text"}, {"id": "", "text": "empty id"}]
    resp = client.post("/v1/collections/dist/documents", json={"documents": docs + bad})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]

    seen: list[int] = []

    def finished() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["progress"]["done"])
        return job if job["status"] in ("succeeded", "failed") else None

    job = wait_until(finished, 600, "the job to finish", interval=0.2)
    assert isinstance(job, dict) and job["status"] == "succeeded", job
    assert job["progress"] == {"total": 80, "done": 80, "failed": 0}
    assert seen == sorted(seen) and any(0 < n < 80 for n in seen), seen

    errors = client.get(f"/v1/jobs/{job_id}/errors").json()["errors"]
    assert sorted((e["line"], e["reason"]) for e in errors) == [
        (81, "missing text"),
        (82, "empty id"),
    ]
    # Exactly once: one row per (document, window), every document has windows 0..n-1.
    dupes = stack.sql('SELECT document_id, "window" FROM chunks GROUP BY 1, 2 HAVING COUNT(*) > 1')
    assert dupes == []
    gaps = stack.sql(
        'SELECT document_id FROM chunks GROUP BY 1 HAVING MAX("window") + 1 <> COUNT(*)'
    )
    assert gaps == []
    (n_docs,) = stack.sql("SELECT COUNT(DISTINCT document_id) FROM chunks")[0]
    assert n_docs == 80
    # Both embed workers took part: one task at a time, and two at once on threads.
    for name in ("embed-1", "embed-2"):
        assert "embedq.embed_batch" in stack.workers[name].output(), name
    assert "concurrency: 1 (solo)" in stack.workers["embed-1"].output()
    assert "concurrency: 2 (thread)" in stack.workers["embed-2"].output()

    chunk_ids = {r[0] for r in stack.sql("SELECT id FROM chunks")}
    wait_until(
        lambda: client.get("/v1/collections/dist").json()["indexed"] == len(chunk_ids),
        120,
        "the index writer to publish every chunk",
    )
    index, _meta = IndexStore(stack.data_dir / "indexes").load(
        "dist", model=meta_model(stack), dim=384
    )
    import faiss

    ids = faiss.vector_to_array(index.id_map)
    assert sorted(ids.tolist()) == sorted(chunk_ids) and len(set(ids.tolist())) == len(ids)

    hits = client.post(
        "/v1/collections/dist/search", json={"query": "What causes the seasons on Earth?", "k": 3}
    ).json()["hits"]
    assert hits[0]["id"] == "astro-001"


def meta_model(stack: Stack) -> str:
    return str(stack.sql("SELECT model FROM collections WHERE name = 'dist'")[0][0])


def test_cli_index_wait_through_the_queue(stack: Stack, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(100, 40))
    proc = embedq(stack.env, "index", str(corpus), "-c", "cli", "--wait", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 40
    first = demo_docs(100, 1)[0]
    proc = embedq(stack.env, "search", "cli", first["title"], "--json", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"][0]["id"] == first["id"]
    # Without --wait the producer prints the job id at once and the workers finish it.
    more = write_jsonl(tmp_path / "d.jsonl", demo_docs(140, 16))
    proc = embedq(stack.env, "index", str(more), "-c", "cli", "-q")
    job_id = proc.stdout.strip()
    assert proc.returncode == 0 and len(job_id) == 32
    wait_until(
        lambda: (
            json.loads(embedq(stack.env, "jobs", "show", job_id, "--json").stdout)["status"]
            == "succeeded"
        ),
        300,
        "the queued job",
    )


def test_analysis_jobs_run_on_the_workers(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.api, timeout=60)
    submitted = {
        "embed": {"kind": "embed", "texts": ["a red apple", "a green pear"]},
        "cluster": {"kind": "cluster", "collection": "dist", "k": 4},
        "words": {"kind": "words", "sentence": "The bank by the river, the bank for money."},
        "zero_shot": {
            "kind": "zero_shot",
            "texts": ["The orbit of Mars is elliptical."],
            "labels": ["astronomy", "cooking", "finance"],
        },
    }
    jobs = {}
    for kind, body in submitted.items():
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        jobs[kind] = resp.json()["job_id"]

    def result(job_id: str) -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed") else None

    for kind, job_id in jobs.items():
        job = wait_until(lambda j=job_id: result(j), 300, f"the {kind} job")
        assert isinstance(job, dict) and job["status"] == "succeeded", job
    vectors = client.get(f"/v1/jobs/{jobs['embed']}/result").json()["result"]["vectors"]
    assert len(vectors) == 2 and len(vectors[0]) == 384
    clusters = client.get(f"/v1/jobs/{jobs['cluster']}/result").json()["result"]
    assert clusters["k"] == 4 and sum(c["size"] for c in clusters["clusters"]) == 80
    png = client.get(f"/v1/jobs/{jobs['cluster']}/files/clusters.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    words = client.get(f"/v1/jobs/{jobs['words']}/result").json()["result"]
    assert [r["word"] for r in words["repeated"]] == ["the", "bank"]
    labels = client.get(f"/v1/jobs/{jobs['zero_shot']}/result").json()["result"]["results"]
    assert labels[0]["labels"][0]["label"] == "astronomy"
    # The model-heavy kinds ran on the embed workers, clustering on the default worker.
    assert "embedq.analyse" in stack.workers["default"].output()


def test_flower_shows_the_job_tasks_by_name(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.flower, auth=AUTH, timeout=30)
    assert httpx.get(f"{stack.flower}/api/tasks", timeout=10).status_code == 401

    def named_tasks() -> set[str] | None:
        tasks = client.get("/api/tasks", params={"limit": 5000}).json()
        names = {t.get("name") for t in tasks.values()}
        return names if {"embedq.embed_batch", "embedq.catch_up"} <= names else None

    names = wait_until(named_tasks, 60, "Flower to list the tasks")
    assert isinstance(names, set)
    tasks = client.get("/api/tasks", params={"taskname": "embedq.embed_batch"}).json()
    args = [t["args"] for t in tasks.values()]
    # Tasks carry ids, never texts.
    assert args and all(a.strip("[]()").rstrip(",").isdigit() for a in args), args[:3]
    workers = client.get("/api/workers").json()
    assert len(workers) >= 4


def test_bad_requests_get_4xx_with_a_message(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.api, timeout=30)
    cases = [
        client.get("/v1/collections/nope"),
        client.get("/v1/jobs/0123456789abcdef0123456789abcdef"),
        client.post("/v1/collections/nope/search", json={"query": "x"}),
        client.post("/v1/collections/dist/search", json={"k": 3}),
        client.post(
            "/v1/collections/dist/search",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        client.post("/v1/jobs", json={"kind": "no-such-kind"}),
    ]
    for resp in cases:
        assert 400 <= resp.status_code < 500, (resp.request.url, resp.status_code, resp.text)
        assert resp.json()["detail"]
