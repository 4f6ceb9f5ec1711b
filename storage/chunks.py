"""Chunk rows: swapping a document's chunks for newly embedded ones, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from storage.documents import advance_sequence, lock_collection, tombstone_chunks
from storage.models import Chunk, Document, chunk_id


@dataclass(frozen=True, slots=True)
class Span:
    number: int
    start: int
    end: int
    tokens: int


@dataclass(slots=True)
class EmbeddedDocument:
    document_id: int
    content_hash: str
    spans: list[Span]
    vectors: np.ndarray  # (len(spans), dim) float32


def write_chunks(session: Session, collection_id: int, docs: Sequence[EmbeddedDocument]) -> int:
    """Replace the chunks of each still-pending document with its new ones.

    Takes the collection lock first, so chunk ids follow commit order. A document that was
    deleted, changed again, or already written by another delivery of the same batch is
    skipped, which makes a redelivered batch a no-op. Returns how many documents it wrote.
    """
    lock_collection(session, collection_id)
    wanted = {d.document_id: d for d in docs}
    rows = session.execute(
        select(Document.id, Document.content_hash, Document.indexed_hash).where(
            Document.id.in_(wanted)
        )
    ).all()
    apply = [
        wanted[r.id]
        for r in rows
        if r.content_hash == wanted[r.id].content_hash and r.indexed_hash != r.content_hash
    ]
    if not apply:
        return 0
    apply.sort(key=lambda d: d.document_id)
    tombstone_chunks(session, collection_id, [d.document_id for d in apply])
    total = sum(len(d.spans) for d in apply)
    seq = advance_sequence(session, collection_id, total)
    values = []
    for doc in apply:
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        for span, vector in zip(doc.spans, vectors, strict=True):
            values.append(
                {
                    "id": chunk_id(collection_id, seq),
                    "collection_id": collection_id,
                    "document_id": doc.document_id,
                    "window": span.number,
                    "start": span.start,
                    "end": span.end,
                    "tokens": span.tokens,
                    "vector": vector.tobytes(),
                }
            )
            seq += 1
    if values:
        session.execute(insert(Chunk), values)
    for doc in apply:
        session.execute(
            update(Document)
            .where(Document.id == doc.document_id, Document.content_hash == doc.content_hash)
            .values(indexed_hash=doc.content_hash)
        )
    return len(apply)


def vectors_from_rows(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stack stored float32 vectors into one (n, dim) array without Python-level copies."""
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
