"""Jobs, their batches, progress and errors. Status is derived from stored batch states."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Select, and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.models import BatchState, Collection, Job, JobBatch, JobError, JobStatus, utcnow

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued, JobStatus.running)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def create_job(
    session: Session, kind: str, *, collection_id: int | None = None, params: dict[str, Any]
) -> str:
    job = Job(
        id=uuid.uuid4().hex,
        kind=kind,
        collection_id=collection_id,
        params=params,
        status=JobStatus.queued,
        total=0,
        done=0,
        failed=0,
        skipped=0,
        sealed=False,
    )
    session.add(job)
    session.flush()
    return job.id


def mark_running(session: Session, job_id: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.running, started_at=utcnow())
    )


_ERROR_ID_CHARS: int = JobError.__table__.c.external_id.type.length  # type: ignore[attr-defined]


def _storable_text(value: str | None, width: int | None = None) -> str | None:
    """``value`` as a column can hold it: NUL shown as ``\\0``, cut to ``width`` characters (an
    error row must be writable even for the record that was refused for its id or its NUL)."""
    if value is None:
        return None
    value = value.replace("\0", "\\0")
    if width is not None and len(value) > width:
        value = value[: width - 1] + "\u2026"
    return value


def add_errors(session: Session, job_id: str, errors: Iterable[dict[str, Any]]) -> int:
    """Record rejected records: dicts with ``reason`` and optional ``line``, ``id``, ``source``."""
    rows = [
        {
            "job_id": job_id,
            "line": e.get("line"),
            "external_id": _storable_text(e.get("id"), _ERROR_ID_CHARS),
            "source": _storable_text(e.get("source")),
            "reason": _storable_text(e["reason"]),
        }
        for e in errors
    ]
    if rows:
        session.execute(insert(JobError), rows)
    return len(rows)


def count_records(session: Session, job_id: str, *, accepted: int, unchanged: int) -> None:
    """Count accepted records into the total; unchanged ones are done at once."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            total=Job.total + accepted,
            done=Job.done + unchanged,
            skipped=Job.skipped + unchanged,
        )
    )


def add_batches(session: Session, job_id: str, groups: Sequence[Sequence[int]]) -> list[int]:
    """One batch row per group of document ids, in one statement; their ids, in order."""
    if not groups:
        return []
    rows = [
        {"job_id": job_id, "document_ids": list(ids), "size": len(ids), "attempts": 0}
        for ids in groups
    ]
    stmt = insert(JobBatch).returning(JobBatch.id, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows))


def add_batch(session: Session, job_id: str, document_ids: Sequence[int]) -> int:
    batch = JobBatch(job_id=job_id, document_ids=list(document_ids), size=len(document_ids))
    session.add(batch)
    session.flush()
    return batch.id


def db_now(session: Session) -> Any:
    """The clock for batch stamps: PostgreSQL's own (workers on other hosts compare them),
    or this host's for SQLite, which has a single host."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def mark_queued(session: Session, batch_id: int) -> None:
    """Stamp a batch as handed to the broker now (before it is sent, so that a worker never
    begins a batch whose latest stamp is newer than its start)."""
    session.execute(
        update(JobBatch).where(JobBatch.id == batch_id).values(queued_at=db_now(session))
    )


def in_flight(session: Session, job_id: str) -> int:
    """Pending batches of the job handed to the broker (queued, maybe begun)."""
    count = session.scalar(
        select(func.count())
        .select_from(JobBatch)
        .where(
            JobBatch.job_id == job_id,
            JobBatch.state == BatchState.pending,
            JobBatch.queued_at.is_not(None),
        )
    )
    return int(count or 0)


def unqueued(session: Session, job_id: str, limit: int) -> list[int]:
    """The job's oldest pending batches never handed to the broker, at most ``limit``."""
    return list(
        session.scalars(
            select(JobBatch.id)
            .where(
                JobBatch.job_id == job_id,
                JobBatch.state == BatchState.pending,
                JobBatch.queued_at.is_(None),
            )
            .order_by(JobBatch.id)
            .limit(limit)
        )
    )


def claim_unqueued(session: Session, batch_id: int) -> bool:
    """Stamp a never-queued pending batch as queued now; False when another feeder (or a
    settle) got there first. True: the caller sends it."""
    changed = _rowcount(
        session.execute(
            update(JobBatch)
            .where(
                JobBatch.id == batch_id,
                JobBatch.state == BatchState.pending,
                JobBatch.queued_at.is_(None),
            )
            .values(queued_at=db_now(session))
        )
    )
    return bool(changed)


def begin_delivery(
    session: Session, batch_id: int, worker: str | None
) -> tuple[int, str, str] | None:
    """Count a delivery of a pending batch and stamp when and by which worker it began, in
    one atomic ``UPDATE``; (deliveries so far, job id, collection name), or None when the
    batch is settled or gone."""
    changed = _rowcount(
        session.execute(
            update(JobBatch)
            .where(JobBatch.id == batch_id, JobBatch.state == BatchState.pending)
            .values(attempts=JobBatch.attempts + 1, started_at=db_now(session), worker=worker)
            .execution_options(synchronize_session=False)
        )
    )
    if not changed:
        return None
    row = session.execute(
        with_collection(JobBatch.attempts, Job.id, Collection.name).where(JobBatch.id == batch_id)
    ).one()
    return int(row[0]), str(row[1]), str(row[2])


def with_collection(*columns: Any) -> Select[Any]:
    """A select of ``columns`` over job batches joined to their job and its collection."""
    return (
        select(*columns)
        .join(Job, Job.id == JobBatch.job_id)
        .join(Collection, Collection.id == Job.collection_id)
    )


def unqueue_pending(session: Session, job_id: str) -> int:
    """Forget that the job's pending batches were handed on (the broker lost them): the
    feeder hands them on again. Returns how many."""
    return _rowcount(
        session.execute(
            update(JobBatch)
            .where(JobBatch.job_id == job_id, JobBatch.state == BatchState.pending)
            .values(queued_at=None)
        )
    )


def jobs_to_feed(session: Session) -> list[str]:
    """Running jobs with pending batches never handed to the broker, oldest job first."""
    waiting = (
        select(JobBatch.id)
        .where(
            JobBatch.job_id == Job.id,
            JobBatch.state == BatchState.pending,
            JobBatch.queued_at.is_(None),
        )
        .exists()
    )
    return list(
        session.scalars(
            select(Job.id).where(Job.status == JobStatus.running, waiting).order_by(Job.created_at)
        )
    )


def claim_requeue(
    session: Session, batch_id: int, *, queued_at: datetime | None, started_at: datetime | None
) -> bool:
    """Stamp a batch as queued again if it is still pending and unchanged since it was read
    (same stamps): a batch that a worker began meanwhile, or that a second reconciler already
    claimed, is left alone. True when the caller should send it."""
    changed = _rowcount(
        session.execute(
            update(JobBatch)
            .where(
                JobBatch.id == batch_id,
                JobBatch.state == BatchState.pending,
                JobBatch.queued_at.is_not_distinct_from(queued_at),
                JobBatch.started_at.is_not_distinct_from(started_at),
            )
            .values(queued_at=db_now(session))
        )
    )
    return bool(changed)


def take_lease(session: Session, job_id: str, seconds: float) -> bool:
    """Hold the job's ingestion for ``seconds``: a queued job nobody holds, or a renewal by
    the holder (``renew``: a running job). True when the caller holds it now."""
    now = db_now(session)
    changed = _rowcount(
        session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.queued,
                or_(Job.lease_until.is_(None), Job.lease_until < now),
            )
            .values(lease_until=now + timedelta(seconds=seconds))
        )
    )
    return bool(changed)


def renew_lease(session: Session, job_id: str, seconds: float) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(lease_until=db_now(session) + timedelta(seconds=seconds))
    )


def lease_held(session: Session, job_id: str) -> bool:
    """True while the job's ingestion lease has not run out."""
    until = session.scalar(select(Job.lease_until).where(Job.id == job_id))
    if until is None:
        return False
    now = session.scalar(select(func.now())) if _postgres(session) else utcnow()
    return bool(_aware(until) > _aware(now))


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _aware(value: Any) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def seal(session: Session, job_id: str) -> None:
    """The producer has submitted everything; the job may now finish."""
    session.execute(update(Job).where(Job.id == job_id).values(sealed=True))


def settle_batch(session: Session, batch_id: int, *, error: str | None = None) -> bool:
    """Mark a pending batch done (or failed) and count it once; False if already settled."""
    batch = session.get(JobBatch, batch_id)
    if batch is None:
        return False
    state = BatchState.failed if error else BatchState.done
    changed = _rowcount(
        session.execute(
            update(JobBatch)
            .where(JobBatch.id == batch_id, JobBatch.state == BatchState.pending)
            .values(state=state, error=error)
        )
    )
    if not changed:
        return False
    column = "failed" if error else "done"
    session.execute(
        update(Job)
        .where(Job.id == batch.job_id)
        .values({column: getattr(Job, column) + batch.size})
    )
    if error:
        add_errors(session, batch.job_id, [{"reason": f"batch of {batch.size} failed: {error}"}])
    return True


def try_finish(session: Session, job_id: str, result: dict[str, Any] | None = None) -> bool:
    """Finish a sealed job whose batches are all settled; True for the one caller that does."""
    pending = exists().where(and_(JobBatch.job_id == job_id, JobBatch.state == BatchState.pending))
    job = session.get(Job, job_id)
    if job is None:
        return False
    status = JobStatus.failed if job.failed else JobStatus.succeeded
    error = f"{job.failed} document(s) could not be embedded" if job.failed else None
    changed = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE), Job.sealed.is_(True), ~pending)
            .values(status=status, error=error, result=result, finished_at=utcnow())
        )
    )
    return bool(changed)


def fail_job(session: Session, job_id: str, error: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.failed, error=error, finished_at=utcnow())
    )


def fail_quietly(factory: sessionmaker[Session], job_id: str, error: str) -> bool:
    """Fail an unfinished job after an unexpected error, never raising: the caller is already
    handling one, and a job must not stay ``running`` because recording its failure failed.
    True when the failure was recorded."""
    try:
        with factory.begin() as session:
            fail_job(session, job_id, error)
    except Exception:
        log.exception("cannot record the failure of job %s", job_id)
        return False
    return True


def job_view(session: Session, job: Job) -> dict[str, Any]:
    """The job as the API and ``--json`` show it."""
    return job_views(session, [job])[0]


def job_views(session: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Jobs as the API and ``--json`` show them, with two queries for any number of jobs."""
    ids = {job.collection_id for job in jobs if job.collection_id is not None}
    names: dict[int | None, str] = dict(
        session.execute(select(Collection.id, Collection.name).where(Collection.id.in_(ids))).all()
        if ids
        else []
    )
    rejected = dict(
        session.execute(
            select(JobError.job_id, func.count())
            .where(JobError.job_id.in_([job.id for job in jobs]))
            .group_by(JobError.job_id)
        ).all()
        if jobs
        else []
    )
    return [
        {
            "id": job.id,
            "kind": job.kind,
            "status": job.status.value,
            "collection": names.get(job.collection_id),
            "progress": {"total": job.total, "done": job.done, "failed": job.failed},
            "unchanged": job.skipped,
            "rejected": int(rejected.get(job.id, 0)),
            "params": job.params,
            "error": job.error,
            "result": job.result,
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
        for job in jobs
    ]


def job_errors(
    session: Session, job_id: str, *, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    query = select(JobError).where(JobError.job_id == job_id).order_by(JobError.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    out = []
    for err in session.scalars(query):
        item: dict[str, Any] = {"line": err.line, "reason": err.reason}
        if err.external_id is not None:
            item["id"] = err.external_id
        if err.source is not None:
            item["source"] = err.source
        out.append(item)
    return out


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)))


def complete_job(session: Session, job_id: str, result: dict[str, Any]) -> bool:
    """Finish a one-step job with its result; True for the call that finished it."""
    changed = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE))
            .values(
                status=JobStatus.succeeded,
                result=result,
                total=1,
                done=1,
                sealed=True,
                finished_at=utcnow(),
            )
        )
    )
    return bool(changed)


def cancel_job(session: Session, job_id: str) -> bool:
    """Cancel an unfinished job: its pending batches are settled unrun; False if finished.

    Batches before the job: a worker settles a batch in that order (its batch row, then the
    job's counts), so a cancel never holds the job's row while waiting on a batch's. With the
    opposite order the two wait on each other and PostgreSQL aborts one of them.
    """
    active = select(Job.id).where(Job.id == job_id, Job.status.in_(ACTIVE))
    session.execute(
        update(JobBatch)
        .where(JobBatch.job_id.in_(active), JobBatch.state == BatchState.pending)
        .values(state=BatchState.failed, error="cancelled")
    )
    changed = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE))
            .values(status=JobStatus.cancelled, error="cancelled", finished_at=utcnow())
        )
    )
    return bool(changed)


def embedding_into(session: Session, collection_id: int) -> bool:
    """Whether an unfinished job still has batches to embed into the collection."""
    return (
        session.scalar(
            select(JobBatch.id)
            .join(Job, Job.id == JobBatch.job_id)
            .where(
                Job.collection_id == collection_id,
                Job.status.in_((JobStatus.queued, JobStatus.running)),
                JobBatch.state == BatchState.pending,
            )
            .limit(1)
        )
        is not None
    )
