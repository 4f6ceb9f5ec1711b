"""Job leases: a second delivery of a live analysis job does nothing; an expired lease is
taken over."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.jobs import create_job
from embedq.storage.leases import held_lease, take_lease
from embedq.storage.models import Job, JobStatus, utcnow
from embedq.storage.schema import upgrade
from embedq.tasks.analysis import create_analysis_job, run_analysis_job
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings


def test_one_live_lease_at_a_time(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = create_job(session, "cluster", params={})
    with sessions.begin() as session:
        assert take_lease(session, job_id, "first")
    with sessions.begin() as session:
        assert not take_lease(session, job_id, "second")
        assert take_lease(session, job_id, "first")  # renewal
    with sessions.begin() as session:
        past = utcnow() - timedelta(seconds=1)
        session.execute(update(Job).where(Job.id == job_id).values(lease_until=past))
    with sessions.begin() as session:
        assert take_lease(session, job_id, "second")  # the first stopped renewing
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.succeeded))
        assert not take_lease(session, job_id, "third")


def test_a_held_lease_is_renewed_and_released(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = create_job(session, "cluster", params={})
    with held_lease(sessions, job_id, lease_s=0.6, renew_s=0.1) as mine:
        assert mine
        time.sleep(1.0)  # longer than the lease: only the renewals keep it
        with sessions.begin() as session:
            assert not take_lease(session, job_id, "other")
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.lease_owner is None and job.lease_until is None


def test_a_second_delivery_of_a_running_analysis_job_does_nothing(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    upgrade(rt.sessions.kw["bind"])
    job_id = create_analysis_job(rt, "embed", {"texts": ["a cat", "a dog"]})
    with held_lease(rt.sessions, job_id) as first:  # the first delivery, still running
        assert first
        assert run_analysis_job(rt, job_id) is None
        with rt.sessions() as session:
            assert session.get_one(Job, job_id).status == JobStatus.queued
    result = run_analysis_job(rt, job_id)  # the first delivery died: the job runs once more
    assert result is not None and result["dim"] == 384
    with rt.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.succeeded
