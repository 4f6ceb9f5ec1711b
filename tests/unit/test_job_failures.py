"""A job's errors are always writable, and a failure while a job runs never leaves it running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.db import describe_error
from embedq.storage.jobs import add_errors, create_job, job_errors
from embedq.storage.models import Job, JobStatus
from embedq.tasks import producer
from embedq.tasks.collection_setup import CollectionSpec
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings


def test_an_error_row_holds_any_id_and_reason(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = create_job(session, "index", params={})
        add_errors(
            session,
            job_id,
            [
                {"line": 1, "id": "x" * 2000, "reason": "id too long"},
                {"line": 2, "id": "a\0b", "reason": "NUL \0 in id", "source": "s\0"},
            ],
        )
    with sessions() as session:
        long_error, nul_error = job_errors(session, job_id)
    assert len(long_error["id"]) == 1024 and long_error["id"].endswith("\u2026")
    assert nul_error == {"line": 2, "id": "a\\0b", "reason": "NUL \\0 in id", "source": "s\\0"}


def test_a_database_error_is_described_without_its_statement() -> None:
    exc = OperationalError("INSERT INTO documents VALUES (%(text)s)", {"text": "secret"}, None)
    exc.orig = RuntimeError("value too long for type character varying(1024)\nDETAIL: ...")
    assert describe_error(exc) == (
        "database error: value too long for type character varying(1024)"
    )
    assert describe_error(ValueError("plain")) == "ValueError: plain"


def test_a_storage_failure_during_ingest_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    from embedq.storage.schema import upgrade

    upgrade(rt.sessions.kw["bind"])

    def broken(*_args: Any, **_kwargs: Any) -> Iterator[Any]:
        raise OperationalError(
            "INSERT INTO documents ...", {"text": "a document"}, RuntimeError("disk I/O error")
        )
        yield  # pragma: no cover - makes this a generator

    monkeypatch.setattr(producer, "read_corpus", broken)
    with pytest.raises(OperationalError):
        producer.submit_index_job(rt, CollectionSpec("c"), ["x.jsonl"], progress=False)
    with rt.sessions() as session:
        (job,) = session.query(Job).all()
    assert job.status == JobStatus.failed
    assert job.error == "database error: disk I/O error"
