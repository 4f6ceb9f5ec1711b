"""Deleting a collection while a real embed worker and the index writer work on it, on
PostgreSQL and Redis: nothing of it is left behind, the name is free at once, and a job
callback is delivered by the ``default`` worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from tests.integration.conftest import clean_env, embedq, ok_json, write_jsonl
from tests.integration.test_listing import Receiver
from tests.integration.test_recovery import Cluster, short_docs
from tests.services import (
    embedq_process,
    free_port,
    fresh_pg_database,
    redis_db,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration
SEQ_BITS = 40


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with fresh_pg_database("embedq_race") as database, redis_db() as broker:
        env = clean_env(
            EMBEDQ_DATA_DIR=str(tmp_path / "data"),
            EMBEDQ_DATABASE_URL=database,
            EMBEDQ_BROKER_URL=broker,
            EMBEDQ_BATCH_DOCS="4",
            EMBEDQ_CALLBACK_POLL_S="0.2",
            # Snapshots published while a job runs (a small index otherwise waits for the
            # job's end), so that a deletion races files being written.
            EMBEDQ_PUBLISH_ROWS="8",
            TOKENIZERS_PARALLELISM="false",
        )
        assert embedq(env, "db", "upgrade").returncode == 0
        cluster = Cluster(env, database, broker, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop_all()
            tracebacks = cluster.tracebacks()
            assert not tracebacks, tracebacks


def idle(cluster: Cluster) -> bool:
    """No message waits in the embed or index queue and no worker runs a task."""
    client = redis.Redis.from_url(cluster.broker)
    try:
        if client.llen("embed") or client.llen("index"):
            return False
    finally:
        client.close()
    control = Celery(broker=cluster.broker)
    try:
        active = control.control.inspect(timeout=1.0).active() or {}
    finally:
        control.close()
    return len(active) >= 3 and not any(active.values())


def leftovers(cluster: Cluster, coll: int, name: str) -> dict[str, Any]:
    low, high = coll << SEQ_BITS, (coll + 1) << SEQ_BITS
    indexes = Path(cluster.env["EMBEDQ_DATA_DIR"]) / "indexes"
    return {
        "documents": cluster.sql("SELECT COUNT(*) FROM documents WHERE collection_id = :c", c=coll)[
            0
        ][0],
        "chunks": cluster.sql(
            "SELECT COUNT(*) FROM chunks WHERE id >= :lo AND id < :hi", lo=low, hi=high
        )[0][0],
        "tombstones": cluster.sql(
            "SELECT COUNT(*) FROM tombstones WHERE collection_id = :c", c=coll
        )[0][0],
        "pending batches": cluster.sql(
            "SELECT COUNT(*) FROM job_batches b JOIN jobs j ON j.id = b.job_id "
            "WHERE b.state = 'pending' AND j.error LIKE :e",
            e=f"%{name!r} was deleted%",
        )[0][0],
        "files": sorted(p.name for p in indexes.iterdir()) if indexes.exists() else [],
    }


def test_delete_racing_an_index_job_leaves_nothing_behind(cluster: Cluster) -> None:
    cluster.start_all()
    docs = short_docs(160, step=1)
    corpus = write_jsonl(cluster.tmp / "race.jsonl", docs)
    proc = embedq(cluster.env, "index", str(corpus), "-c", "race", "-q")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    coll = int(cluster.sql("SELECT id FROM collections WHERE name = 'race'")[0][0])
    current = Path(cluster.env["EMBEDQ_DATA_DIR"]) / "indexes" / "race" / "current.json"

    def underway() -> bool:
        done = cluster.job(job_id).done
        return current.exists() and 8 <= done < 120

    wait_until(underway, 300, "the job to be under way, with a published snapshot", 0.1)
    deleted = ok_json(cluster.env, "collections", "delete", "race", "--json")
    assert deleted["name"] == "race" and deleted["cancelled_jobs"] == [job_id]
    assert 0 < deleted["chunks"] < 160

    wait_until(lambda: idle(cluster), 180, "the workers to be idle", 0.5)
    time.sleep(2)  # a late write would show now
    assert leftovers(cluster, coll, "race") == {
        "documents": 0,
        "chunks": 0,
        "tombstones": 0,
        "pending batches": 0,
        "files": [],
    }
    job = cluster.job(job_id)
    assert job.status == "cancelled" and job.collection_id is None

    # The name at once: the same corpus again, to the end, and every document searchable.
    again = ok_json(cluster.env, "index", str(corpus), "-c", "race", "--wait", "--json", "-q")
    assert again["status"] == "succeeded", again
    assert again["progress"] == {"total": 160, "done": 160, "failed": 0}
    assert again["unchanged"] == 0
    shown = ok_json(cluster.env, "collections", "show", "race", "--json")
    assert (shown["documents"], shown["chunks"]) == (160, 160)
    hits = ok_json(cluster.env, "search", "race", docs[7]["title"], "-k", "3", "--json")["hits"]
    assert hits[0]["id"] == docs[7]["id"]


def test_a_callback_is_delivered_by_the_default_worker(cluster: Cluster) -> None:
    cluster.start_all()
    port = free_port()
    api = embedq_process(["api", "--port", str(port)], cluster.env, cluster.tmp / "api.log")
    cluster.procs["api"] = api
    cluster.logs.append(cluster.tmp / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", timeout=180)
    receiver = Receiver(fail=1)
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.post("/v1/collections", json={"name": "hooked"}).status_code == 201
            body = {
                "documents": [{"id": d["id"], "text": d["text"]} for d in short_docs(6)],
                "callback_url": receiver.url,
            }
            response = http.post("/v1/collections/hooked/documents", json=body)
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            wait_until(lambda: any(c[0] == 200 for c in receiver.calls), 240, "the callback")
            time.sleep(3)
            assert [c[0] for c in receiver.calls] == [503, 200]
            final = receiver.calls[-1][2]
            assert final["id"] == job_id and final["status"] == "succeeded"
            assert final == http.get(f"/v1/jobs/{job_id}").json()
    finally:
        receiver.close()
    assert "embedq.deliver_callback" in cluster.procs["default"].output()
