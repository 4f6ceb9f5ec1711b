"""Listing collections and jobs in cursor pages, job ids by prefix, and deleting a collection,
on SQLite and PostgreSQL. Vectors are synthetic; no model is loaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update

from embedq.storage.db import transaction
from embedq.storage.jobs import add_batch, create_job, mark_running
from embedq.storage.models import Chunk, Collection, Document, Job, JobBatch, Tombstone
from embedq.tasks import collections, joblist
from embedq.tasks.cursors import BadCursor
from embedq.tasks.runtime import Runtime
from tests.unit.test_storage import Sessions, index_texts, make_collection

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_job(
    sessions: Sessions,
    kind: str = "index",
    *,
    collection_id: int | None = None,
    at: datetime = T0,
    status: str | None = None,
) -> str:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, kind, collection_id=collection_id, params={})
        values: dict[str, Any] = {"created_at": at}
        if status:
            values["status"] = status
        s.execute(update(Job).where(Job.id == job_id).values(**values))
        return job_id


def all_pages(rt: Runtime, limit: int, between: Any = None, **filters: Any) -> list[str]:
    ids, cursor = [], None
    while True:
        page = joblist.list_jobs(rt, limit=limit, cursor=cursor, **filters)
        assert len(page["jobs"]) <= limit
        ids += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            return ids
        if between:
            between()


def test_job_pages_are_newest_first_and_stable_under_inserts(rt: Runtime) -> None:
    s = rt.sessions
    # Seven jobs, three of them created in the same microsecond: the id breaks the tie.
    times = [T0 + timedelta(seconds=i) for i in (0, 1, 2, 2, 2, 3, 4)]
    made = [add_job(s, at=t) for t in times]
    expected = sorted(made, key=lambda j: (times[made.index(j)], j), reverse=True)
    assert all_pages(rt, 3) == expected

    # Jobs created while a client pages, newer and older than its position, shift nothing.
    inserted: list[str] = []

    def insert() -> None:
        inserted.append(add_job(s, at=T0 + timedelta(hours=1)))

    assert all_pages(rt, 2, between=insert) == expected
    assert len(inserted) == 3
    assert all_pages(rt, 100) == sorted(inserted, reverse=True) + expected


def test_job_filters(rt: Runtime) -> None:
    s = rt.sessions
    coll = make_collection(s, "papers")
    other = make_collection(s, "other")
    a = add_job(s, "index", collection_id=coll, at=T0, status="succeeded")
    b = add_job(s, "cluster", collection_id=coll, at=T0 + timedelta(seconds=1), status="failed")
    c = add_job(s, "index", collection_id=other, at=T0 + timedelta(seconds=2))
    d = add_job(s, "embed", at=T0 + timedelta(seconds=3), status="running")
    assert all_pages(rt, 10, collection="papers") == [b, a]
    assert all_pages(rt, 10, kind="index") == [c, a]
    assert all_pages(rt, 10, kind="index,embed") == [d, c, a]
    assert all_pages(rt, 10, status="failed,running") == [d, b]
    assert all_pages(rt, 1, status="succeeded", collection="papers", kind="index") == [a]
    assert all_pages(rt, 10, collection="no-such-collection") == []
    with pytest.raises(ValueError, match="unknown job status 'done'"):
        joblist.list_jobs(rt, status="done")
    with pytest.raises(ValueError, match="limit"):
        joblist.list_jobs(rt, limit=0)


@pytest.mark.parametrize(
    "cursor", ["not base64 !", "bm90IGpzb24", "WyJjb2xsZWN0aW9ucyIsImEiXQ", "WyJqb2JzIiwxLDJd"]
)
def test_a_cursor_not_handed_out_is_refused(rt: Runtime, cursor: str) -> None:
    with pytest.raises(BadCursor):
        joblist.list_jobs(rt, cursor=cursor)


def test_job_ids_by_unique_prefix(rt: Runtime) -> None:
    s = rt.sessions
    made = [add_job(s) for _ in range(3)]
    with transaction(s, write=True) as session:
        session.execute(update(Job).where(Job.id == made[0]).values(id="abc1" + "0" * 28))
        session.execute(update(Job).where(Job.id == made[1]).values(id="abc2" + "0" * 28))
        session.execute(update(Job).where(Job.id == made[2]).values(id="b" + "1" * 31))
    assert joblist.resolve_job_id(rt, "abc1") == "abc1" + "0" * 28
    assert joblist.resolve_job_id(rt, "B") == "b" + "1" * 31
    assert joblist.resolve_job_id(rt, "b" + "1" * 31) == "b" + "1" * 31
    with pytest.raises(joblist.AmbiguousJobId, match="'abc' matches more than one job"):
        joblist.resolve_job_id(rt, "abc")
    for missing in ("abc3", "c", "%", "_bc", "a%"):
        with pytest.raises(joblist.JobNotFound, match="no job"):
            joblist.resolve_job_id(rt, missing)


def test_collection_pages_by_name(rt: Runtime) -> None:
    for name in ("delta", "alpha", "charlie", "bravo", "echo"):
        make_collection(rt.sessions, name)
    names, cursor, pages = [], None, 0
    while True:
        page = collections.list_collections(rt, limit=2, cursor=cursor)
        names += [c["name"] for c in page["collections"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
        make_collection(rt.sessions, f"aa{pages}")  # sorts before the cursor: never shown
    assert names == ["alpha", "bravo", "charlie", "delta", "echo"]
    first = collections.list_collections(rt)["collections"][0]
    assert first["name"] == "aa1"
    assert {k: first[k] for k in ("dim", "documents", "chunks", "indexed", "index")} == {
        "dim": 8,
        "documents": 0,
        "chunks": 0,
        "indexed": 0,
        "index": "Flat",
    }
    with pytest.raises(BadCursor):
        collections.list_collections(rt, cursor=joblist.list_jobs(rt)["next"] or "eA")


def rows_of(rt: Runtime, cid: int) -> dict[str, int]:
    with transaction(rt.sessions) as s:
        return {
            "collections": s.scalar(select(func.count()).where(Collection.id == cid)),
            "documents": s.scalar(select(func.count()).where(Document.collection_id == cid)),
            "chunks": s.scalar(select(func.count()).where(Chunk.collection_id == cid)),
            "tombstones": s.scalar(select(func.count()).where(Tombstone.collection_id == cid)),
        }


def test_delete_removes_rows_files_and_pending_work(rt: Runtime, rng: np.random.Generator) -> None:
    s = rt.sessions
    cid = make_collection(s, "gone")
    keep = make_collection(s, "kept")
    index_texts(s, cid, {f"d{i}": f"text {i}" for i in range(5)}, rng, n=2)
    index_texts(s, keep, {"k": "kept text"}, rng, n=1)
    rt.writer.catch_up("gone", force=True)
    rt.writer.catch_up("kept", force=True)
    index_texts(s, cid, {"d0": "changed"}, rng, n=2)  # tombstones above the snapshot
    assert rt.store.meta("gone") is not None
    done = add_job(s, collection_id=cid, status="succeeded")
    running = add_job(s, collection_id=cid)
    with transaction(s, write=True) as session:
        mark_running(session, running)
        session.execute(update(Job).where(Job.id == running).values(params={"source": "upload"}))
        batch = add_batch(session, running, [1, 2])
    upload = rt.settings.data_dir / "uploads" / f"{running}.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text('{"id": "x", "text": "y"}\n')
    assert rows_of(rt, cid)["tombstones"] > 0

    deleted = collections.delete_collection(rt, "gone")

    assert deleted.as_dict() == {
        "name": "gone",
        "documents": 5,
        "chunks": 10,
        "cancelled_jobs": [running],
    }
    assert rows_of(rt, cid) == {"collections": 0, "documents": 0, "chunks": 0, "tombstones": 0}
    assert rows_of(rt, keep) == {"collections": 1, "documents": 1, "chunks": 1, "tombstones": 0}
    assert not (rt.store.root / "gone").exists() and (rt.store.root / "kept").is_dir()
    assert [p.name for p in rt.store.root.iterdir()] == ["kept"]
    assert not upload.exists()
    with transaction(s) as session:
        jobs = {j.id: j for j in session.scalars(select(Job))}
        assert session.get_one(JobBatch, batch).state == "failed"
    assert jobs[running].status == "cancelled" and "'gone' was deleted" in jobs[running].error
    assert jobs[done].status == "succeeded" and jobs[done].collection_id is None
    with pytest.raises(collections.CollectionNotFound):
        collections.delete_collection(rt, "gone")

    # The name is free at once, for a collection of its own.
    again = make_collection(s, "gone")
    index_texts(s, again, {"n": "new text"}, rng, n=3)
    meta = rt.writer.catch_up("gone", force=True)
    assert meta is not None and meta.count == 3
    assert collections.show_collection(rt, "gone")["chunks"] == 3


def test_a_writer_never_leaves_a_deleted_collection_behind(
    rt: Runtime, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = rt.sessions
    cid = make_collection(s, "raced")
    index_texts(s, cid, {f"d{i}": f"text {i}" for i in range(4)}, rng)
    # A catch-up for a collection that is gone makes no folder for it.
    assert rt.writer.catch_up("never-made") is None
    assert not (rt.store.root / "never-made").exists()

    # The collection is deleted while the writer publishes it: the writer has read its rows,
    # the deletion renames the folder away, then the writer writes its snapshot.
    publish = rt.store.publish

    def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        collections.delete_collection(rt, "raced")
        return publish(*args, **kwargs)

    monkeypatch.setattr(rt.store, "publish", deleted_meanwhile)
    rt.writer.catch_up("raced", force=True)
    assert list(rt.store.root.iterdir()) == []

    # Deleted and made again under the same name while the writer publishes the old one:
    # the old snapshot is dropped, and the new collection gets one of its own.
    old = make_collection(s, "raced")
    index_texts(s, old, {f"d{i}": f"text {i}" for i in range(4)}, rng)
    made: list[int] = []

    def replaced_meanwhile(*args: Any, **kwargs: Any) -> Any:
        collections.delete_collection(rt, "raced")
        made.append(make_collection(s, "raced"))
        index_texts(s, made[0], {"new": "text"}, rng, n=1)
        return publish(*args, **kwargs)

    monkeypatch.setattr(rt.store, "publish", replaced_meanwhile)
    rt.writer.catch_up("raced", force=True)
    assert rt.store.meta("raced") is None
    monkeypatch.setattr(rt.store, "publish", publish)
    meta = rt.writer.catch_up("raced", force=True)
    assert meta is not None and meta.count == 1


def test_a_deleted_collection_id_is_never_given_again(rt: Runtime) -> None:
    make_collection(rt.sessions, "first")
    newest = make_collection(rt.sessions, "newest")
    collections.delete_collection(rt, "newest")
    # SQLite on its own would give the next collection the highest id plus one: ``newest``'s.
    assert make_collection(rt.sessions, "next") > newest
    assert make_collection(rt.sessions, "newest") > newest + 1
