"""Chunk rows: swapping a document's chunks for newly embedded ones, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from embedq.storage.documents import advance_sequence, lock_collection, tombstone_chunks
from embedq.storage.models import Chunk, Document, chunk_id


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
    chunk_rows: list[tuple[object, ...]] = []
    for doc in apply:
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        for span, vector in zip(doc.spans, vectors, strict=True):
            chunk_rows.append(
                (
                    chunk_id(collection_id, seq),
                    collection_id,
                    doc.document_id,
                    span.number,
                    span.start,
                    span.end,
                    span.tokens,
                    vector.tobytes(),
                )
            )
            seq += 1
    insert_chunks(session, chunk_rows)
    # One statement for all documents (executemany), not one round trip each.
    marks = [{"doc": d.document_id, "digest": d.content_hash} for d in apply]
    session.execute(_MARK_INDEXED, marks)
    return len(apply)


_CHUNKS = cast(Table, Chunk.__table__)
_COLUMNS = ("id", "collection_id", "document_id", "window", "start", "end", "tokens", "vector")
_COPY = 'COPY chunks ("{}") FROM STDIN (FORMAT BINARY)'.format('", "'.join(_COLUMNS))
_INSERT = 'INSERT INTO chunks ("{}") VALUES ({})'.format(
    '", "'.join(_COLUMNS), ", ".join("?" * len(_COLUMNS))
)
_BINARY_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "BYTEA": "bytea"}


def insert_chunks(session: Session, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert chunk rows (values in ``_COLUMNS`` order) in the session's transaction: a binary
    ``COPY`` on PostgreSQL with psycopg (no statement per row, vectors sent as raw bytes),
    the driver's own ``executemany`` on SQLite, SQLAlchemy's elsewhere."""
    if not rows:
        return
    conn = session.connection()
    dialect, raw = conn.dialect, conn.connection.driver_connection
    assert raw is not None  # a connection in a transaction has its DBAPI connection
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        types = [_BINARY_TYPES[_CHUNKS.c[c].type.compile(dialect=dialect)] for c in _COLUMNS]
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    elif dialect.name == "sqlite" and dialect.driver == "pysqlite":
        raw.executemany(_INSERT, rows)
    else:
        session.execute(insert(Chunk), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


_DOCUMENTS = cast(Table, Document.__table__)
_MARK_INDEXED = (
    _DOCUMENTS.update()
    .where(_DOCUMENTS.c.id == bindparam("doc"), _DOCUMENTS.c.content_hash == bindparam("digest"))
    .values(indexed_hash=bindparam("digest"))
)


def vectors_from_rows(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stack stored float32 vectors into one (n, dim) array without Python-level copies."""
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
