"""Two writers that need the same rows on PostgreSQL wait their turn; neither is aborted as a
deadlock. Each case pauses the first writer right after a statement that took row locks, until
the second is seen waiting on a lock, then lets it go on:

- a worker settling a batch (its batch row, then the job's counts) against a cancel of the job
  or a deletion of its collection: both take the batches before the job;
- a producer storing changed documents (their rows, then the job's counts) against a deletion
  of the collection, which deletes those documents after cancelling the job: the producer
  holds the collection's row from its first statement, and the deletion locks that row first.

With the orders these replaced, the two wait on each other and PostgreSQL aborts one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session

from embedq.storage.collection_delete import delete_collection_rows
from embedq.storage.db import transaction
from embedq.storage.jobs import add_batch, create_job, mark_running, settle_batch
from embedq.storage.models import BatchState, Collection, Document, Job, JobBatch
from embedq.storage.readers import Record
from embedq.storage.schema import upgrade
from embedq.tasks import job_control
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.indexing import PendingBatch, ingest
from embedq.tasks.producer import start_index_job
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings
from tests.services import fresh_pg_database


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with fresh_pg_database("embedq_lock") as url:
        runtime = Runtime(Settings(data_dir=tmp_path / "data", database_url=url))
        upgrade(runtime.sessions.kw["bind"])
        yield runtime
        runtime.sessions.kw["bind"].dispose()


def new_job(rt: Runtime, batches: int) -> tuple[str, list[int]]:
    with rt.sessions.begin() as session:
        coll = Collection(name="busy", model="m", dim=4, chunk_tokens=16, overlap=0, seq=0)
        session.add(coll)
        session.flush()
        job_id = create_job(session, "index", collection_id=coll.id, params={})
        mark_running(session, job_id)
        ids = [add_batch(session, job_id, [i, i + 100]) for i in range(batches)]
    return job_id, ids


def someone_waits_on_a_lock(rt: Runtime) -> bool:
    with rt.sessions() as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def pause_after_first(rt: Runtime, prefix: str) -> threading.Event:
    """Pause the first statement that starts with ``prefix``, once it has run, until another
    transaction waits on a lock (10 s at most); the event is set when it has run."""
    ran = threading.Event()

    def pause(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(prefix) and not ran.is_set():
            ran.set()
            deadline = time.monotonic() + 10
            while not someone_waits_on_a_lock(rt) and time.monotonic() < deadline:
                time.sleep(0.02)

    event.listen(rt.sessions.kw["bind"], "after_cursor_execute", pause)
    return ran


def settle(rt: Runtime, batch_id: int) -> None:
    with transaction(rt.sessions, write=True) as session:
        assert settle_batch(session, batch_id)


def cancel(rt: Runtime, job_id: str) -> None:
    assert job_control.cancel(rt, job_id)["status"] == "cancelled"


def delete(rt: Runtime, *job_ids: str) -> None:
    with transaction(rt.sessions, write=True) as session:
        coll = session.scalars(select(Collection).where(Collection.name == "busy")).one()
        assert sorted(delete_collection_rows(session, coll).cancelled) == sorted(job_ids)


def one_after_the_other(
    paused: threading.Event, first: Callable[[], None], second: Callable[[], None]
) -> list[BaseException]:
    """Run ``first`` on a thread; once it has paused, ``second`` on another; both to their
    end. Returns what either raised."""
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the caller's assertion
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    threads = [run(first)]
    assert paused.wait(10)
    threads.append(run(second))
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return errors


@pytest.mark.parametrize("other", [cancel, delete], ids=["cancel", "delete"])
def test_a_settling_worker_and_a_cancel_wait_their_turn(
    rt: Runtime, other: Callable[[Runtime, str], None]
) -> None:
    job_id, ids = new_job(rt, 3)
    paused = pause_after_first(rt, "UPDATE job_batches")
    errors = one_after_the_other(paused, lambda: settle(rt, ids[0]), lambda: other(rt, job_id))
    assert errors == []
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.status.value == "cancelled" and job.done == 2
        states = {row.id: row.state for row in session.execute(select(JobBatch.id, JobBatch.state))}
    assert states == {ids[0]: BatchState.done, ids[1]: BatchState.failed, ids[2]: BatchState.failed}


def test_a_producer_storing_changed_documents_and_a_deletion_wait_their_turn(
    rt: Runtime,
) -> None:
    coll = ensure_collection(rt, CollectionSpec("busy"))
    first = start_index_job(rt, coll, {})
    ingest(rt, first, records("text"), lambda _: None)  # stored, not embedded
    again = start_index_job(rt, coll, {})
    handed: list[PendingBatch] = []
    paused = pause_after_first(rt, "INSERT INTO documents")
    errors = one_after_the_other(
        paused,
        lambda: ingest(rt, again, records("changed text"), handed.append),
        lambda: delete(rt, again, first),
    )
    assert errors == []
    # The producer's group went in whole before the deletion, which then removed it.
    assert [len(b.docs) for b in handed] == [5]
    with rt.sessions() as session:
        assert session.scalars(select(Collection.id)).all() == []
        assert {j.status.value for j in session.scalars(select(Job))} == {"cancelled"}


def records(text: str) -> list[Record]:
    return [Record(f"d{n}", f"{text} {n}", None, None, "c.jsonl", n + 1) for n in range(5)]


def test_a_producer_aborted_as_a_deadlock_stores_its_group_again(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer re-storing documents in an order of its input, against a worker marking
    them indexed in id order: PostgreSQL aborts the producer (it waited first), which runs
    its group's transaction again instead of failing the job."""
    coll = ensure_collection(rt, CollectionSpec("busy"))
    first = start_index_job(rt, coll, {})
    ingest(rt, first, records("text"), lambda _: None)
    with rt.sessions() as session:
        ids = dict(session.execute(select(Document.external_id, Document.id)).tuples().all())
    again = start_index_job(rt, coll, {})

    def mark(session: Session, external_id: str) -> None:
        session.execute(
            update(Document)
            .where(Document.id == ids[external_id])
            .values(indexed_hash=Document.content_hash)
        )

    def worker() -> None:
        with transaction(rt.sessions) as session:
            mark(session, "d0")
            marked.set()
            deadline = time.monotonic() + 10
            while not someone_waits_on_a_lock(rt) and time.monotonic() < deadline:
                time.sleep(0.02)
            mark(session, "d4")

    marked = threading.Event()
    handed: list[PendingBatch] = []
    backwards = records("changed text")[::-1]  # d4 first: the worker's d0 comes last
    with caplog.at_level(logging.WARNING, logger="embedq.storage.db"):
        errors = one_after_the_other(
            marked, worker, lambda: ingest(rt, again, backwards, handed.append)
        )
    assert errors == []
    assert "running it again" in caplog.text
    assert [len(b.docs) for b in handed] == [5]
    with rt.sessions() as session:
        texts = session.scalars(select(Document.text).order_by(Document.external_id)).all()
        job = session.get_one(Job, again)
    assert texts == [f"changed text {n}" for n in range(5)]
    assert job.total == 5 and job.status.value == "running" and job.sealed
