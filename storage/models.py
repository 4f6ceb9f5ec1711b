"""SQLAlchemy models: the source of truth for collections, documents, chunks and jobs.

Chunk primary keys double as FAISS ids. They are built as ``collection_id << SEQ_BITS | seq``
where ``seq`` comes from a per-collection counter that is advanced under the collection row's
lock, so within a collection ids grow in commit order. The index writer can then catch up
from a single number (the watermark) without missing rows committed late.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SEQ_BITS = 40

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunk_id(collection_id: int, seq: int) -> int:
    """The FAISS id of the chunk allocated sequence number ``seq`` in a collection."""
    return (collection_id << SEQ_BITS) | seq


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class BatchState(enum.StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(512))
    dim: Mapped[int] = mapped_column(Integer)
    chunk_tokens: Mapped[int] = mapped_column(Integer)
    overlap: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16), default="cosine")
    index_factory: Mapped[str] = mapped_column(String(128), default="Flat")
    # Last allocated sequence number; advanced only while the row is locked.
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("collection_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Hash of the content whose chunks are stored; differs from content_hash while pending.
    indexed_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_document", "document_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    window: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Tombstone(Base):
    """A chunk removed from SQL that a published snapshot may still hold."""

    __tablename__ = "tombstones"
    __table_args__ = (Index("ix_tombstones_collection_seq", "collection_id", "seq"),)

    chunk_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_collection_created", "collection_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16), default=JobStatus.queued
    )
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL"), nullable=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    # True once the producer has submitted every batch; the job cannot finish before.
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Until when the process streaming the job's records into SQL holds it: a second
    # delivery of the ingestion finds it held and leaves it alone.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Who runs a one-step (analysis) job now; with ``lease_until``, renewed while it runs, a
    # second delivery of a job whose lease is live does nothing (storage/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(256), nullable=True)


class JobBatch(Base):
    __tablename__ = "job_batches"
    __table_args__ = (Index("ix_job_batches_job_state", "job_id", "state"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    document_ids: Mapped[list[int]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[BatchState] = mapped_column(
        Enum(BatchState, native_enum=False, length=16), default=BatchState.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the batch was last handed to the broker, and when a worker last began it (and
    # which one): the reconciler uses them to find batches the broker or a worker lost.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)


class JobError(Base):
    __tablename__ = "job_errors"
    __table_args__ = (Index("ix_job_errors_job", "job_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    reason: Mapped[str] = mapped_column(Text)


class JobCallback(Base):
    """A URL to POST a job's final JSON to once it finishes, and how delivery is going.

    ``next_at`` is when the next attempt may begin: after a failed attempt, the retry time;
    while an attempt runs (``sending``), the end of its lease."""

    __tablename__ = "job_callbacks"
    __table_args__ = (Index("ix_job_callbacks_due", "state", "next_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdCounter(Base):
    """The last id given to a row of a table whose ids must never be given twice. SQLite
    numbers a new row one above the highest id in the table, so without it a collection made
    right after the newest one was deleted would get that one's id, and its chunk ids."""

    __tablename__ = "id_counters"

    table: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)


@event.listens_for(Collection, "before_insert")
def never_reuse_ids(_mapper: Any, connection: Connection, target: Collection) -> None:
    """On SQLite, number a new collection from the counter (PostgreSQL's sequence never
    gives an id twice). One statement that writes first: it takes SQLite's write lock before
    it reads, as every write transaction here must."""
    if connection.dialect.name != "sqlite" or target.id is not None:
        return
    highest = select(func.coalesce(func.max(Collection.id), 0)).scalar_subquery()
    target.id = connection.execute(
        update(IdCounter)
        .where(IdCounter.table == "collections")
        .values(last_id=func.max(IdCounter.last_id, highest) + 1)
        .returning(IdCounter.last_id)
    ).scalar_one()


class ApiKey(Base):
    """An API key: only a SHA-256 of the secret is stored, looked up by its public prefix."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
