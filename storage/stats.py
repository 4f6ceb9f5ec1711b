"""Counts for monitoring: jobs by kind and status, batches by state, rows per collection.

Each is one grouped query (or one per collection for the range scans on chunk ids), cheap
enough to run on every Prometheus scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from embedq.storage.collections import collection_counts
from embedq.storage.index_store import IndexStore
from embedq.storage.models import SEQ_BITS, BatchState, Chunk, Collection, Job, JobBatch, Tombstone


def job_counts(session: Session) -> dict[tuple[str, str], int]:
    """Jobs per (kind, status)."""
    rows = session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
    ).all()
    return {(kind, str(status)): int(n) for kind, status, n in rows}


def batch_counts(session: Session) -> dict[str, int]:
    """Batches per state. A pending batch is ``waiting`` until it is sent to the broker,
    ``queued`` until a worker begins it, then ``running`` until it is settled."""
    begun = and_(
        JobBatch.started_at.is_not(None),
        or_(JobBatch.queued_at.is_(None), JobBatch.started_at >= JobBatch.queued_at),
    )
    state = case(
        (JobBatch.state == BatchState.done, "done"),
        (JobBatch.state == BatchState.failed, "failed"),
        (begun, "running"),
        (JobBatch.queued_at.is_not(None), "queued"),
        else_="waiting",
    )
    rows = session.execute(select(state, func.count()).group_by(state)).all()
    out = dict.fromkeys(("waiting", "queued", "running", "done", "failed"), 0)
    out.update({str(name): int(n) for name, n in rows})
    return out


@dataclass(frozen=True, slots=True)
class CollectionRows:
    name: str
    documents: int
    chunks: int
    indexed: int
    unpublished: int


def collection_rows(session: Session, store: IndexStore) -> list[CollectionRows]:
    """Stored documents and chunks, published vectors and rows changed since the published
    snapshot (chunks added or deleted above its watermark), for every collection."""
    out = []
    for coll in session.scalars(select(Collection).order_by(Collection.name)):
        counts = collection_counts(session, coll.id)
        meta = store.meta(coll.name)
        watermark = meta.watermark if meta is not None else 0
        base = coll.id << SEQ_BITS
        added = session.scalar(
            select(func.count())
            .select_from(Chunk)
            .where(Chunk.id > base + watermark, Chunk.id < (coll.id + 1) << SEQ_BITS)
        )
        removed = session.scalar(
            select(func.count())
            .select_from(Tombstone)
            .where(Tombstone.collection_id == coll.id, Tombstone.seq > watermark)
        )
        out.append(
            CollectionRows(
                coll.name,
                counts.documents,
                counts.chunks,
                meta.count if meta is not None else 0,
                int(added or 0) + int(removed or 0),
            )
        )
    return out
