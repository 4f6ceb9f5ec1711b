"""Jobs, their batches, progress and errors. Status is derived from stored batch states."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, and_, exists, func, insert, select, update
from sqlalchemy.orm import Session

from storage.models import BatchState, Collection, Job, JobBatch, JobError, JobStatus, utcnow

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


def add_errors(session: Session, job_id: str, errors: Iterable[dict[str, Any]]) -> int:
    """Record rejected records: dicts with ``reason`` and optional ``line``, ``id``, ``source``."""
    rows = [
        {
            "job_id": job_id,
            "line": e.get("line"),
            "external_id": e.get("id"),
            "source": e.get("source"),
            "reason": e["reason"],
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


def job_view(session: Session, job: Job) -> dict[str, Any]:
    """The job as the API and ``--json`` show it."""
    name = (
        session.scalar(select(Collection.name).where(Collection.id == job.collection_id))
        if job.collection_id is not None
        else None
    )
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status.value,
        "collection": name,
        "progress": {"total": job.total, "done": job.done, "failed": job.failed},
        "unchanged": job.skipped,
        "rejected": session.scalar(
            select(func.count()).select_from(JobError).where(JobError.job_id == job.id)
        ),
        "params": job.params,
        "error": job.error,
        "result": job.result,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


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
    """Cancel an unfinished job: its pending batches are settled unrun; False if finished."""
    changed = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE))
            .values(status=JobStatus.cancelled, error="cancelled", finished_at=utcnow())
        )
    )
    if changed:
        session.execute(
            update(JobBatch)
            .where(JobBatch.job_id == job_id, JobBatch.state == BatchState.pending)
            .values(state=BatchState.failed, error="cancelled")
        )
    return bool(changed)
