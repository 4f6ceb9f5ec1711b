"""Documents: upsert by external id with change detection, and deletion."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import Chunk, Collection, Document, Tombstone


@dataclass(frozen=True, slots=True)
class NewDocument:
    external_id: str
    text: str
    title: str | None = None
    meta: dict[str, Any] | None = None


def content_hash(title: str | None, text: str) -> str:
    """What decides whether a document must be embedded again (meta does not)."""
    digest = hashlib.sha256()
    digest.update((title or "").encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def embedding_input(title: str | None, text: str) -> str:
    """The string that is chunked and embedded; chunk offsets index into it."""
    return f"{title} {text}" if title else text


def upsert_documents(
    session: Session, collection_id: int, docs: Sequence[NewDocument]
) -> list[int]:
    """Insert or update documents; return the ids of those that need embedding.

    An unchanged document is left alone (no write, no work); a changed one gets its new text
    and stays pending until its new chunks replace the old ones. Within ``docs`` the last
    occurrence of an external id wins.
    """
    latest = {d.external_id: d for d in docs}
    if not latest:
        return []
    rows = [
        {
            "collection_id": collection_id,
            "external_id": d.external_id,
            "title": d.title,
            "text": d.text,
            "meta": d.meta,
            "content_hash": content_hash(d.title, d.text),
        }
        for d in latest.values()
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    base = insert(Document).values(rows)
    excluded = base.excluded
    stmt = base.on_conflict_do_update(
        index_elements=[Document.collection_id, Document.external_id],
        set_={
            "title": excluded.title,
            "text": excluded.text,
            "meta": excluded.meta,
            "content_hash": excluded.content_hash,
            "updated_at": func.now(),
        },
        where=or_(
            Document.content_hash != excluded.content_hash,
            Document.indexed_hash.is_(None),
            Document.indexed_hash != Document.content_hash,
            Document.meta.is_distinct_from(excluded.meta),
        ),
    ).returning(Document.id, Document.content_hash, Document.indexed_hash)
    result = session.execute(stmt).all()
    return sorted(row.id for row in result if row.indexed_hash != row.content_hash)


def lock_collection(session: Session, collection_id: int) -> int:
    """Take the collection row's lock for this transaction; return its current sequence."""
    seq = session.execute(
        update(Collection)
        .where(Collection.id == collection_id)
        .values(seq=Collection.seq)
        .returning(Collection.seq)
    ).scalar_one()
    return int(seq)


def advance_sequence(session: Session, collection_id: int, count: int) -> int:
    """Allocate ``count`` sequence numbers (lock held); return the first of them."""
    new_seq = session.execute(
        update(Collection)
        .where(Collection.id == collection_id)
        .values(seq=Collection.seq + count)
        .returning(Collection.seq)
    ).scalar_one()
    return int(new_seq) - count + 1


def tombstone_chunks(session: Session, collection_id: int, document_ids: Sequence[int]) -> int:
    """Delete the chunks of documents, leaving tombstones for the index writer."""
    if not document_ids:
        return 0
    ids = session.scalars(select(Chunk.id).where(Chunk.document_id.in_(document_ids))).all()
    if not ids:
        return 0
    seq = advance_sequence(session, collection_id, 1)
    session.execute(
        insert(Tombstone),
        [{"chunk_id": i, "collection_id": collection_id, "seq": seq} for i in ids],
    )
    session.execute(delete(Chunk).where(Chunk.document_id.in_(document_ids)))
    return len(ids)


def delete_document(session: Session, collection_id: int, external_id: str) -> bool:
    """Remove a document and its chunks; False when there was no such document."""
    lock_collection(session, collection_id)
    doc_id = session.scalar(
        select(Document.id).where(
            Document.collection_id == collection_id, Document.external_id == external_id
        )
    )
    if doc_id is None:
        return False
    tombstone_chunks(session, collection_id, [doc_id])
    session.execute(delete(Document).where(Document.id == doc_id))
    return True
