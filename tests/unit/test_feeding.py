"""The window of batch messages, on SQLite with a list for a broker: a job never has more
than its window handed on, each settled batch makes room for the next, jobs interleave, and
a cancelled job is not fed."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedq.storage.jobs import (
    add_batch,
    cancel_job,
    create_job,
    in_flight,
    mark_running,
    settle_batch,
)
from embedq.storage.models import Collection
from embedq.storage.schema import upgrade
from embedq.tasks.feeding import feed, feed_all
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=tmp_path / "data", max_pending_batches=3))
    upgrade(runtime.sessions.kw["bind"])
    return runtime


def new_job(rt: Runtime, name: str, batches: int) -> tuple[str, list[int]]:
    with rt.sessions.begin() as session:
        coll = Collection(name=name, model="m", dim=4, chunk_tokens=16, overlap=0, seq=0)
        session.add(coll)
        session.flush()
        job_id = create_job(session, "index", collection_id=coll.id, params={})
        mark_running(session, job_id)
        ids = [add_batch(session, job_id, [i]) for i in range(batches)]
    return job_id, ids


def settle(rt: Runtime, batch_id: int) -> None:
    with rt.sessions.begin() as session:
        assert settle_batch(session, batch_id)


def test_a_job_keeps_at_most_its_window_in_the_broker(rt: Runtime) -> None:
    job_id, ids = new_job(rt, "big", 10)
    sent: list[int] = []
    assert feed(rt, job_id, sent.append) == 3 and sent == ids[:3]
    # Full: feeding again (every new batch of a producer does) sends nothing.
    assert feed(rt, job_id, sent.append) == 0 and sent == ids[:3]
    # Each settled batch makes room for exactly one more, oldest first.
    settle(rt, ids[0])
    assert feed(rt, job_id, sent.append) == 1 and sent == ids[:4]
    with rt.sessions() as session:
        assert in_flight(session, job_id) == 3
    # A window of 1 cannot deadlock: nobody waits on it, each settle hands on the next.
    rt.settings.max_pending_batches = 1
    for batch_id in ids[1:4]:
        settle(rt, batch_id)
    assert feed(rt, job_id, sent.append) == 1 and sent == ids[:5]


def test_jobs_are_fed_side_by_side_and_cancelled_ones_not_at_all(rt: Runtime) -> None:
    big, big_ids = new_job(rt, "big", 50)
    small, small_ids = new_job(rt, "small", 2)
    cancelled, _ = new_job(rt, "gone", 5)
    with rt.sessions.begin() as session:
        assert cancel_job(session, cancelled)
    sent: list[int] = []
    assert feed_all(rt, sent.append) == {big: 3, small: 2}
    assert sent == big_ids[:3] + small_ids
    # The small job's batches are in the broker right behind the big job's window, not
    # behind its 50 batches.
    assert sent.index(small_ids[-1]) < 5
