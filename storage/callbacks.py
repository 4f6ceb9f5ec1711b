"""Job callbacks in SQL: which are due, who is delivering one, and how each attempt went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from embedq.storage.models import Job, JobCallback, JobStatus, utcnow

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
FAILED = "failed"
FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


def add_callback(session: Session, job_id: str, url: str) -> None:
    session.add(JobCallback(job_id=job_id, url=url, state=PENDING, attempts=0, next_at=utcnow()))
    session.flush()


def due_callbacks(session: Session, now: datetime, *, limit: int = 100) -> list[JobCallback]:
    """Callbacks of finished jobs whose next attempt may begin: never tried, waiting to retry,
    or claimed by a deliverer whose lease ran out (it died)."""
    query = (
        select(JobCallback)
        .join(Job, Job.id == JobCallback.job_id)
        .where(
            JobCallback.state.in_((PENDING, SENDING)),
            JobCallback.next_at <= now,
            Job.status.in_(FINISHED),
        )
        .order_by(JobCallback.next_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, seen: JobCallback, lease_until: datetime) -> bool:
    """Take a due callback for one attempt, if nobody took it since it was read."""
    result = session.execute(
        update(JobCallback)
        .where(
            JobCallback.job_id == seen.job_id,
            JobCallback.state == seen.state,
            JobCallback.next_at == seen.next_at,
            JobCallback.attempts == seen.attempts,
        )
        .values(state=SENDING, next_at=lease_until, attempts=JobCallback.attempts + 1)
    )
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


def record_attempt(
    session: Session,
    job_id: str,
    *,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """How an attempt ended: delivered (no error), to be retried at ``retry_at``, or given up
    (an error and no retry)."""
    if error is None:
        values = {"state": DELIVERED, "delivered_at": utcnow(), "last_error": None}
    elif retry_at is not None:
        values = {"state": PENDING, "next_at": retry_at, "last_error": error}
    else:
        values = {"state": FAILED, "last_error": error}
    session.execute(
        update(JobCallback)
        .where(JobCallback.job_id == job_id, JobCallback.state == SENDING)
        .values(status_code=status_code, **values)
    )
