"""Prometheus metrics and JSON logs on a real stack: PostgreSQL, Redis, an embed worker that
exports its metrics on a port, the index writer, a default worker (ingestion) and the API.
Both expositions are parsed with prometheus-client's own parser, the worker's while it runs
a job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import clean_env, embedq
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


@dataclass
class Stack:
    api: str
    worker_metrics: str
    embed: Process
    default: Process


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels (the parser refuses
    anything that is not valid Prometheus text)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in found.items() if n == name and set(labels.items()) <= set(lab))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("metrics")
    with fresh_pg_database("embedq_metrics") as db_url, redis_db() as broker:
        env = clean_env(
            EMBEDQ_DATA_DIR=str(tmp / "data"),
            EMBEDQ_DATABASE_URL=db_url,
            EMBEDQ_BROKER_URL=broker,
            EMBEDQ_BATCH_DOCS="4",
        )
        assert embedq(env, "db", "upgrade").returncode == 0
        api_port, metrics_port = free_port(), free_port()
        embed_env = {
            **env,
            "EMBEDQ_METRICS_PORT": str(metrics_port),
            "EMBEDQ_METRICS_ADDR": "127.0.0.1",
            "EMBEDQ_LOG_FORMAT": "json",
        }
        procs = {
            "embed": embedq_process(["worker", "-Q", "embed"], embed_env, tmp / "embed.log"),
            "index": embedq_process(["worker", "-Q", "index"], env, tmp / "index.log"),
            "default": embedq_process(["worker", "-Q", "default"], env, tmp / "default.log"),
            "api": embedq_process(["api", "--port", str(api_port)], env, tmp / "api.log"),
        }
        try:
            api = f"http://127.0.0.1:{api_port}"
            wait_http(f"{api}/healthz")
            worker = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_http(worker)
            yield Stack(api, worker, procs["embed"], procs["default"])
        finally:
            for name, proc in procs.items():
                proc.stop()
                if "Traceback" in proc.output():
                    print(f"--- {name} log ---\n{proc.output()[-4000:]}")


def _docs(count: int) -> list[dict[str, Any]]:
    lines = DEMO.read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line) for line in lines]


def test_worker_and_api_metrics_parse_and_count_a_job(stack: Stack) -> None:
    docs = _docs(60)
    r = httpx.post(f"{stack.api}/v1/collections", json={"name": "watched"}, timeout=60)
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{stack.api}/v1/collections/watched/documents", json={"documents": docs}, timeout=60
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def job() -> dict[str, Any]:
        return dict(httpx.get(f"{stack.api}/v1/jobs/{job_id}", timeout=10).json())

    # Scraped while the job runs: the worker has embedded some batches but not all.
    found: dict[Any, float] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = job()["status"]
        scraped = samples(httpx.get(stack.worker_metrics, timeout=5).text)
        if status == "running" and value(scraped, "embedq_batch_seconds_count") >= 1:
            found = scraped
            break
        assert status in ("queued", "running"), (status, stack.embed.output()[-3000:])
        time.sleep(0.1)
    assert found, (
        f"no scrape in the middle of the job {job()}:\n{stack.embed.output()[-2000:]}\n"
        f"{stack.default.output()[-3000:]}"
    )
    wait_until(lambda: job()["status"] == "succeeded", 600, "the job to succeed")
    worker = samples(httpx.get(stack.worker_metrics, timeout=5).text)
    assert value(worker, "embedq_batch_seconds_count", outcome="done") == 15  # 60 docs / 4
    assert value(worker, "embedq_batch_failures_total") == 0

    httpx.post(
        f"{stack.api}/v1/collections/watched/search",
        json={"query": "trains", "k": 3, "mode": "hybrid"},
        timeout=600,
    ).raise_for_status()

    def api_metrics() -> dict[Any, float] | None:
        r = httpx.get(f"{stack.api}/metrics", timeout=10)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        found = samples(r.text)
        # The index writer publishes a moment after the job's last batch, and may publish a
        # snapshot of part of it first: wait for the one that holds every chunk.
        indexed = value(found, "embedq_collection_indexed", collection="watched")
        chunks = value(found, "embedq_collection_chunks", collection="watched")
        return found if indexed and indexed == chunks else None

    api = wait_until(api_metrics, 120, "the published index to show in /metrics")
    assert isinstance(api, dict)
    families = {name for name, _ in api if name.startswith("embedq_")}
    assert len({n.removesuffix("_bucket").removesuffix("_count") for n in families}) >= 5
    assert value(api, "embedq_jobs", kind="index", status="succeeded") == 1
    assert value(api, "embedq_collection_documents", collection="watched") == 60
    chunks = value(api, "embedq_collection_chunks", collection="watched")
    assert chunks >= 60
    assert value(api, "embedq_collection_indexed", collection="watched") == chunks
    assert value(api, "embedq_collection_unpublished", collection="watched") == 0
    assert value(api, "embedq_batches", state="done") == 15
    assert value(api, "embedq_batches", state="waiting") == 0
    route = "/v1/jobs/{job_id}"
    assert value(api, "embedq_http_request_seconds_count", route=route, status="200") >= 1
    assert value(api, "embedq_search_seconds_count", mode="hybrid") == 1


def test_json_logs_carry_the_job_and_batch(stack: Stack) -> None:
    lines = [ln for ln in stack.embed.output().splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    assert records, stack.embed.output()[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    with_batch = [r for r in records if "batch_id" in r]
    assert with_batch, "no log line names a batch"
    assert all(r["job_id"] and r["collection"] == "watched" for r in with_batch)


def test_metrics_need_a_key_when_keys_are_on(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"), EMBEDQ_API_KEYS="true")
    proc = embedq_process(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 401
    finally:
        proc.stop()
