"""Pages of collections and jobs for listings: keyset pages, so that rows inserted between
two requests never shift a page (no row is shown twice or skipped)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from embedq.storage.models import Collection, Job, JobStatus


def collection_page(
    session: Session, *, limit: int, after: str | None = None
) -> tuple[list[Collection], bool]:
    """Up to ``limit`` collections by name, those after ``after``; and whether more follow."""
    query = select(Collection).order_by(Collection.name).limit(limit + 1)
    if after is not None:
        query = query.where(Collection.name > after)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What a job listing keeps; None keeps everything. ``collection_id`` -1 matches nothing
    (a collection name that does not exist)."""

    statuses: Sequence[JobStatus] | None = None
    collection_id: int | None = None
    kinds: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class JobMark:
    """A job's place in the newest-first order: after it come older jobs (and, at the same
    instant, smaller ids)."""

    created_at: datetime
    id: str


def job_page(
    session: Session, where: JobFilter, *, limit: int, before: JobMark | None = None
) -> tuple[list[Job], bool]:
    """Up to ``limit`` jobs, newest first, those after ``before``; and whether more follow."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if where.statuses:
        query = query.where(Job.status.in_(list(where.statuses)))
    if where.collection_id is not None:
        query = query.where(Job.collection_id == where.collection_id)
    if where.kinds:
        query = query.where(Job.kind.in_(list(where.kinds)))
    if before is not None:
        # A row-value comparison: both databases walk the (created_at, id) index from it.
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(before.created_at, before.id))
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


def job_ids_starting(session: Session, prefix: str, *, limit: int = 2) -> list[str]:
    """Ids of jobs that begin with ``prefix`` (at most ``limit``), the exact id first."""
    if session.get(Job, prefix) is not None:
        return [prefix]
    query = (
        select(Job.id)
        .where(Job.id.startswith(prefix, autoescape=True))
        .order_by(Job.id)
        .limit(limit)
    )
    return list(session.scalars(query))
