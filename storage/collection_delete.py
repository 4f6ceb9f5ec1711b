"""Deleting a collection's rows: documents, chunks, tombstones, and the work still pending.

Jobs of the collection stay as history (their collection becomes null); those still queued
or running are cancelled and their pending batches settled unrun, so a batch message still in
the broker finds nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from embedq.storage.models import (
    SEQ_BITS,
    BatchState,
    Chunk,
    Collection,
    Document,
    Job,
    JobBatch,
    JobStatus,
    Tombstone,
    utcnow,
)

ACTIVE = (JobStatus.queued, JobStatus.running)


@dataclass(slots=True)
class DeletedRows:
    """What a deletion removed and which jobs it cancelled (with their params)."""

    collection_id: int
    documents: int = 0
    chunks: int = 0
    cancelled: dict[str, dict[str, Any]] = field(default_factory=dict)


def _count(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def delete_collection_rows(session: Session, coll: Collection) -> DeletedRows:
    """Remove the collection and everything stored for it, in the caller's transaction.

    The collection row is locked first, as every chunk write does, so a batch being written
    either commits before (and its chunks are deleted here) or fails after (no collection);
    ``FOR UPDATE`` also waits for a producer storing documents of it (``hold_collection``),
    so a deletion never holds the job's row while waiting on the producer's documents.
    Rows are deleted child first so that no cascade has to search for them.
    """
    session.execute(select(Collection.id).where(Collection.id == coll.id).with_for_update()).one()
    out = DeletedRows(coll.id)
    active = select(Job.id).where(Job.collection_id == coll.id, Job.status.in_(ACTIVE))
    reason = f"collection {coll.name!r} was deleted"
    # Batches before jobs: the order in which a worker settles a batch, so neither waits on
    # the other's locks in the opposite order.
    session.execute(
        update(JobBatch)
        .where(JobBatch.job_id.in_(active), JobBatch.state == BatchState.pending)
        .values(state=BatchState.failed, error=reason)
    )
    cancelled = session.execute(
        update(Job)
        .where(Job.collection_id == coll.id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.cancelled, error=reason, finished_at=utcnow())
        .returning(Job.id, Job.params)
    ).all()
    out.cancelled = {row.id: dict(row.params or {}) for row in cancelled}
    low, high = coll.id << SEQ_BITS, (coll.id + 1) << SEQ_BITS
    out.chunks = _count(session.execute(delete(Chunk).where(Chunk.id >= low, Chunk.id < high)))
    session.execute(delete(Tombstone).where(Tombstone.collection_id == coll.id))
    out.documents = _count(
        session.execute(delete(Document).where(Document.collection_id == coll.id))
    )
    session.execute(delete(Collection).where(Collection.id == coll.id))
    return out
