"""A job cancelled, or its collection deleted, while a worker settles one of its batches: on
PostgreSQL both wait their turn, neither is aborted as a deadlock.

The worker's real ``settle_batch`` is paused right after it has locked its batch row, until
the other transaction is seen waiting on a lock; then the worker goes on to the job's row.
Taking the job's row before the batches (the order a cancel once had) makes the two wait on
each other, and PostgreSQL aborts one of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from embedq.storage.collection_delete import delete_collection_rows
from embedq.storage.db import transaction
from embedq.storage.jobs import add_batch, create_job, mark_running, settle_batch
from embedq.storage.models import BatchState, Collection, Job, JobBatch
from embedq.storage.schema import upgrade
from embedq.tasks import job_control
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


def settle_slowly(rt: Runtime, batch_id: int, locked: threading.Event) -> None:
    """The worker's settle, paused after its first statement until another waits on it."""
    with transaction(rt.sessions, write=True) as session:

        def pause(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.startswith("UPDATE job_batches") and not locked.is_set():
                locked.set()
                deadline = time.monotonic() + 10
                while not someone_waits_on_a_lock(rt) and time.monotonic() < deadline:
                    time.sleep(0.02)

        event.listen(session.connection(), "after_cursor_execute", pause)
        assert settle_batch(session, batch_id)


def cancel(rt: Runtime, job_id: str) -> None:
    assert job_control.cancel(rt, job_id)["status"] == "cancelled"


def delete(rt: Runtime, job_id: str) -> None:
    with transaction(rt.sessions, write=True) as session:
        coll = session.scalars(select(Collection).where(Collection.name == "busy")).one()
        assert list(delete_collection_rows(session, coll).cancelled) == [job_id]


@pytest.mark.parametrize("other", [cancel, delete], ids=["cancel", "delete"])
def test_a_settling_worker_and_a_cancel_wait_their_turn(
    rt: Runtime, other: Callable[[Runtime, str], None]
) -> None:
    job_id, ids = new_job(rt, 3)
    errors: list[BaseException] = []

    def run(target: Callable[..., None], *args: Any) -> threading.Thread:
        def body() -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    locked = threading.Event()
    worker = run(settle_slowly, rt, ids[0], locked)
    assert locked.wait(10)
    canceller = run(other, rt, job_id)
    worker.join(30)
    canceller.join(30)
    assert not worker.is_alive() and not canceller.is_alive()
    assert errors == []
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.status.value == "cancelled" and job.done == 2
        states = {row.id: row.state for row in session.execute(select(JobBatch.id, JobBatch.state))}
    assert states == {ids[0]: BatchState.done, ids[1]: BatchState.failed, ids[2]: BatchState.failed}
