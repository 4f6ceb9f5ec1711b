"""Job callbacks: URL checks, backoff, one claim per due callback, and delivery to a real
local HTTP endpoint with retries, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import update

from embedq.storage.db import transaction
from embedq.storage.models import Job, JobCallback, utcnow
from embedq.tasks.callbacks import (
    BadCallbackUrl,
    CallbackWatcher,
    backoff_s,
    check_callback_url,
    deliver,
    register_callback,
)
from embedq.tasks.runtime import Runtime
from tests.integration.test_listing import Receiver
from tests.unit.test_listing import add_job


@pytest.mark.parametrize(
    "url",
    ["ftp://h/x", "http://", "/relative", "http://h/a b", "http://h/\u00e9", "x" * 3000, ""],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(BadCallbackUrl):
        check_callback_url(url)


def test_usable_urls_pass() -> None:
    for url in ("http://127.0.0.1:8080/hook?x=1", "https://example.com/a%20b"):
        assert check_callback_url(url) == url


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for attempt, full in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        waits = [backoff_s(attempt, 2.0, 60.0, rng) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits)
        assert max(waits) - min(waits) > full / 4  # spread, not one instant


def finish(rt: Runtime, job_id: str, status: str = "succeeded") -> None:
    with transaction(rt.sessions, write=True) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status))


def callback(rt: Runtime, job_id: str) -> JobCallback:
    with transaction(rt.sessions) as s:
        return s.get_one(JobCallback, job_id)


def test_only_finished_jobs_are_sent_and_each_claim_is_taken_once(rt: Runtime) -> None:
    job_id = add_job(rt.sessions)
    register_callback(rt, job_id, "http://127.0.0.1:9/hook")
    sent: list[str] = []
    first, second = CallbackWatcher(rt, sent.append), CallbackWatcher(rt, sent.append)
    assert first.poll_once() == []  # still queued
    finish(rt, job_id)
    assert first.poll_once() == [job_id]
    assert second.poll_once() == []  # claimed: its lease has not run out
    state = callback(rt, job_id)
    assert (state.state, state.attempts) == ("sending", 1)
    # A deliverer that died: once the lease ran out, the callback is due again.
    with transaction(rt.sessions, write=True) as s:
        s.execute(update(JobCallback).values(next_at=utcnow() - timedelta(seconds=1)))
    assert second.poll_once() == [job_id]
    assert sent == [job_id, job_id] and callback(rt, job_id).attempts == 2


def test_delivery_retries_then_succeeds_then_stops(rt: Runtime) -> None:
    receiver = Receiver(fail=1)
    try:
        job_id = add_job(rt.sessions)
        register_callback(rt, job_id, receiver.url)
        finish(rt, job_id, "failed")
        watcher = CallbackWatcher(rt, lambda j: None)
        assert watcher.poll_once() == [job_id]
        assert deliver(rt, job_id) == "retry"
        state = callback(rt, job_id)
        assert state.state == "pending" and state.status_code == 503
        assert "answered 503" in (state.last_error or "")
        assert watcher.poll_once() == []  # not before its backoff
        with transaction(rt.sessions, write=True) as s:
            s.execute(update(JobCallback).values(next_at=utcnow()))
        assert watcher.poll_once() == [job_id]
        assert deliver(rt, job_id) == "delivered"
        assert callback(rt, job_id).state == "delivered"
        assert watcher.poll_once() == []
        assert [c[0] for c in receiver.calls] == [503, 200]
        assert receiver.calls[-1][2]["status"] == "failed"
        assert receiver.calls[-1][1]["x-embedq-attempt"] == "2"
    finally:
        receiver.close()


def test_a_refusing_endpoint_is_not_retried(rt: Runtime) -> None:
    job_id = add_job(rt.sessions)
    register_callback(rt, job_id, "http://127.0.0.1:9/unreachable")
    finish(rt, job_id, "cancelled")
    watcher = CallbackWatcher(rt, lambda j: None)
    assert watcher.poll_once() == [job_id]
    assert deliver(rt, job_id) == "retry"  # connection refused: worth another try
    rt.settings.callback_attempts = 1
    with transaction(rt.sessions, write=True) as s:
        s.execute(update(JobCallback).values(next_at=utcnow()))
    assert watcher.poll_once() == [job_id]
    assert deliver(rt, job_id) == "failed"
    assert callback(rt, job_id).state == "failed"
