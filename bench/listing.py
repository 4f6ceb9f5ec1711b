"""Listing and deleting at size: a page of ``GET /v1/jobs`` (the use case behind it) deep
into ``--jobs`` jobs by cursor, against the OFFSET page a naive pager would run at the same
depth; and deleting a collection of ``--chunks`` chunks (with its snapshot) beside another of
the same size, against the time it took to insert those rows.

``--database-url`` runs it on PostgreSQL (an empty database); SQLite in a temporary folder
by default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import fill_synthetic, machine

PAGE = 50


def runtime(data_dir: Path, url: str | None) -> Any:
    from embedq.storage.schema import upgrade
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    rt = Runtime(Settings(data_dir=data_dir, database_url=url))
    upgrade(rt.sessions.kw["bind"])
    return rt


def add_jobs(rt: Any, n: int, collection_ids: list[int]) -> None:
    from sqlalchemy import insert

    from embedq.storage.models import Job

    start = datetime(2026, 1, 1, tzinfo=UTC)
    kinds = ("index", "index", "index", "cluster", "embed")
    statuses = ("succeeded", "succeeded", "failed", "cancelled", "running")
    for first in range(0, n, 10_000):
        rows = [
            {
                "id": uuid.uuid4().hex,
                "kind": kinds[i % 5],
                "status": statuses[i % 5],
                "collection_id": collection_ids[i % len(collection_ids)],
                "params": {},
                "total": 64,
                "done": 64,
                "failed": 0,
                "skipped": 0,
                "sealed": True,
                "created_at": start + timedelta(seconds=i),
            }
            for i in range(first, min(n, first + 10_000))
        ]
        with rt.sessions.begin() as session:
            session.execute(insert(Job), rows)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:,.1f} ms"


def best_of(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def job_pages(rt: Any, n: int) -> None:
    from sqlalchemy import select

    from embedq.storage.models import Job
    from embedq.tasks.joblist import list_jobs

    depth = int(n * 0.9) // PAGE * PAGE
    cursor, walked = None, 0
    while walked < depth:
        page = list_jobs(rt, limit=1000, cursor=cursor)
        cursor, walked = page["next"], walked + len(page["jobs"])
    first = best_of(lambda: list_jobs(rt, limit=PAGE))
    deep = best_of(lambda: list_jobs(rt, limit=PAGE, cursor=cursor))
    filtered = best_of(lambda: list_jobs(rt, limit=PAGE, collection="keep", status="failed"))

    def offset_page() -> None:
        with rt.sessions() as session:
            query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
            list(session.scalars(query.offset(depth).limit(PAGE)))

    offset = best_of(offset_page)
    print(f"jobs: {n:,}; a page of {PAGE}, best of 5 (job views included)")
    print(f"  first page:                          {ms(first)}")
    print(f"  page at {depth:,} by cursor:          {ms(deep)}")
    print(f"  the OFFSET query alone at {depth:,}:  {ms(offset)}")
    print(f"  first page, one collection, failed:  {ms(filtered)}")


def delete(rt: Any, chunks: int) -> None:
    from embedq.tasks.collections import delete_collection, list_collections

    started = time.perf_counter()
    fill_synthetic(rt, "gone", chunks, seed=1, tag="gone")
    inserted = time.perf_counter() - started
    rt.writer.catch_up("gone", force=True)
    listed = best_of(lambda: list_collections(rt))
    started = time.perf_counter()
    deleted = delete_collection(rt, "gone")
    took = time.perf_counter() - started
    assert deleted.chunks == chunks and not (rt.store.root / "gone").exists()
    print(f"collections list (2 of {chunks:,} chunks each): {ms(listed)}")
    print(
        f"delete a collection of {chunks:,} chunks and its snapshot: {took:.2f} s "
        f"(inserting its rows took {inserted:.2f} s: ratio {took / inserted:.2f})"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench listing", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="200,000 jobs and chunks")
    parser.add_argument("--database-url", help="an empty PostgreSQL database; default SQLite")
    args = parser.parse_args(argv)
    if args.full:
        args.jobs, args.chunks = 200_000, 200_000
    with tempfile.TemporaryDirectory(prefix="embedq-bench-listing-") as tmp:
        rt = runtime(Path(tmp), args.database_url)
        print(machine())
        print(f"database: {rt.sessions.kw['bind'].dialect.name}")
        keep = fill_synthetic(rt, "keep", args.chunks, tag="keep")
        add_jobs(rt, args.jobs, [keep])
        job_pages(rt, args.jobs)
        delete(rt, args.chunks)
        rt.sessions.kw["bind"].dispose()
