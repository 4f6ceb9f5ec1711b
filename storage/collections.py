"""Small read-only queries about collections."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from embedq.storage.models import SEQ_BITS, Chunk, Collection, Document


@dataclass(frozen=True, slots=True)
class CollectionCounts:
    documents: int
    chunks: int


def find_collection(session: Session, name: str) -> Collection | None:
    """The collection with this name, or None."""
    return session.scalars(select(Collection).where(Collection.name == name)).first()


def collection_counts(session: Session, collection_id: int) -> CollectionCounts:
    """Documents and chunk rows stored for a collection (SQL, not the published index)."""
    documents = session.scalar(
        select(func.count()).select_from(Document).where(Document.collection_id == collection_id)
    )
    # Chunk ids carry the collection in their high bits: a primary-key range scan.
    chunks = session.scalar(
        select(func.count())
        .select_from(Chunk)
        .where(Chunk.id >= collection_id << SEQ_BITS, Chunk.id < (collection_id + 1) << SEQ_BITS)
    )
    return CollectionCounts(documents=int(documents or 0), chunks=int(chunks or 0))
