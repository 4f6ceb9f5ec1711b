"""Submission with a broker: how fast ``embedq index`` puts records into SQL (SQLite and
PostgreSQL, no worker running), and how many embed messages Redis holds over a long job.

    python -m bench submission [--docs 20000] [--job-docs 3000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.common import cli_env, embedq, machine
from bench.stack import start_worker

TOPICS = ["bees", "rivers", "trains", "violins", "glaciers", "markets", "comets", "ferns"]


def corpus(path: Path, count: int, prefix: str) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            text = f"Note {i} of {prefix}: {TOPICS[i % 8]} and {TOPICS[(i // 8) % 8]}."
            fh.write(json.dumps({"id": f"{prefix}-{i}", "text": text}) + "\n")
    return path


def submit(env: dict[str, str], path: Path, name: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    job = json.loads(embedq(env, "index", str(path), "-c", name, "-q", "--json"))
    return time.perf_counter() - started, job


def rate(tmp: Path, docs: int, backend: str) -> None:
    import redis

    from tests.services import fresh_pg_database, redis_db

    database = fresh_pg_database("embedq_bench") if backend == "postgresql" else nullcontext()
    with database as url, redis_db() as broker:
        extra = {"EMBEDQ_BROKER_URL": broker}
        if url:
            extra["EMBEDQ_DATABASE_URL"] = url
        env = cli_env(tmp / backend, **extra)
        embedq(env, "db", "upgrade")
        path = corpus(tmp / f"{backend}.jsonl", docs, "sub")
        seconds, job = submit(env, path, "sub")
        queued = redis.Redis.from_url(broker).llen("embed")
    batches = -(-docs // 64)
    print(
        f"| {backend} | {docs:,} | {seconds:.1f} s | {docs / seconds:,.0f} | "
        f"{job['status']} | {queued} of {batches} batches |"
    )


def long_job(tmp: Path, docs: int) -> None:
    import redis

    from tests.services import fresh_pg_database, redis_db

    with fresh_pg_database("embedq_bench") as url, redis_db() as broker:
        env = cli_env(tmp / "long", EMBEDQ_BROKER_URL=broker, EMBEDQ_DATABASE_URL=url)
        embedq(env, "db", "upgrade")
        workers = [start_worker(q, env) for q in ("embed", "index")]
        try:
            client = redis.Redis.from_url(broker)
            seconds, job = submit(env, corpus(tmp / "long.jsonl", docs, "long"), "long")
            samples = []
            started = time.perf_counter()
            while True:
                samples.append(int(client.llen("embed")))
                view = json.loads(embedq(env, "jobs", "show", job["id"], "--json"))
                if view["status"] not in ("queued", "running"):
                    break
                time.sleep(1)
            took = time.perf_counter() - started
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(60)
    batches = -(-docs // 64)
    print(
        f"\nlong job: {docs:,} documents in {batches} batches, submitted in {seconds:.1f} s, "
        f"{view['status']} after {took:.0f} s with one embed worker; embed messages in Redis "
        f"sampled every second: max {max(samples)}, mean {sum(samples) / len(samples):.1f} "
        f"({len(samples)} samples)"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench submission")
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--job-docs", type=int, default=3_000)
    args = parser.parse_args(argv)
    print(machine())
    print("\n| database | documents | `embedq index` wall | docs/s | job | embed messages |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for backend in ("sqlite", "postgresql"):
            rate(tmp, args.docs, backend)
        if args.job_docs:
            long_job(tmp, args.job_docs)
