"""The ingestion lease: one delivery of an ingestion holds the job; a second delivery while
the first is alive leaves it alone, one after the first died fails the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.jobs import create_job, lease_held, mark_running, renew_lease, take_lease
from embedq.storage.models import Job, JobStatus
from embedq.storage.schema import upgrade
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.dispatch import InlineDispatcher
from embedq.tasks.producer import start_index_job
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings
from embedq.tasks.uploads import ingest_file


def test_one_holder_at_a_time(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = create_job(session, "index", params={})
    with sessions.begin() as session:
        assert take_lease(session, job_id, 60)
    with sessions.begin() as session:
        assert not take_lease(session, job_id, 60)  # held: a second delivery backs off
        assert lease_held(session, job_id)
    with sessions.begin() as session:
        renew_lease(session, job_id, -1)  # as if the holder stopped renewing long ago
    with sessions.begin() as session:
        assert not lease_held(session, job_id)
        assert take_lease(session, job_id, 60)  # a queued job whose holder died


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=tmp_path / "data"))
    upgrade(runtime.sessions.kw["bind"])
    return runtime


def running_job(rt: Runtime, lease_s: float) -> str:
    job_id = start_index_job(rt, ensure_collection(rt, CollectionSpec("c")), {})
    with rt.sessions.begin() as session:
        renew_lease(session, job_id, lease_s)
        mark_running(session, job_id)
    return job_id


def status(rt: Runtime, job_id: str) -> JobStatus:
    with rt.sessions() as session:
        return session.get_one(Job, job_id).status


def test_a_redelivery_leaves_a_live_ingestion_alone(rt: Runtime, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_text('{"id": "a", "text": "honeybees"}\n')
    job_id = running_job(rt, 600)
    ingest_file(rt, InlineDispatcher(rt), job_id, str(spool), "jsonl")
    assert status(rt, job_id) == JobStatus.running and spool.exists()


def test_a_redelivery_after_the_ingestion_died_fails_the_job(rt: Runtime, tmp_path: Path) -> None:
    job_id = running_job(rt, -1)
    ingest_file(rt, InlineDispatcher(rt), job_id, str(tmp_path / "spool.jsonl"), "jsonl")
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
    assert job.status == JobStatus.failed and "interrupted" in (job.error or "")
