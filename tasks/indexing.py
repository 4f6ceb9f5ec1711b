"""The index job's steps as plain functions: the embedded dispatcher and the Celery tasks
both call these.

Flow: a producer (``embedq.tasks.producer``) creates the job, ``ingest`` streams records into SQL
(one batch row per group, each handed to ``on_batch`` with the documents it holds) and seals
the job; then
``embed_batch`` per batch, the index writer's catch-up, ``finish``. Every step is
idempotent, so a redelivered task does no harm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from embedq.storage.chunks import EmbeddedDocument, Span, write_chunks
from embedq.storage.db import again_on_conflict, transaction
from embedq.storage.documents import (
    NewDocument,
    embedding_input,
    hold_collection,
    upsert_pending,
)
from embedq.storage.jobs import (
    add_batches,
    add_errors,
    begin_delivery,
    count_records,
    mark_running,
    seal,
    settle_batch,
    try_finish,
    with_collection,
)
from embedq.storage.models import BatchState, Collection, Document, Job, JobBatch, JobStatus
from embedq.storage.readers import Record, Rejected
from embedq.tasks.errors import BadInput
from embedq.tasks.metrics import count_tokens
from embedq.tasks.runtime import Runtime
from embedq.workers.chunking import Window

log = logging.getLogger(__name__)
CANCEL_CHECK_S = 1.0
GROUP_TOKENS = 262_144
"""Tokens of records a group of several batches holds at most (one transaction each)."""
CHARS_PER_TOKEN = 4
"""English text runs at about four characters a word piece: enough to size a task before
the worker cuts its windows."""


def estimated_tokens(record: Record) -> int:
    """A record's tokens as guessed from its length (two for the special tokens)."""
    return (len(record.text) + len(record.title or "")) // CHARS_PER_TOKEN + 2


def split_by_budget(weights: Sequence[int], max_items: int, max_weight: int) -> list[range]:
    """Consecutive runs of items, each closing once it holds ``max_items`` items or its
    weights reach ``max_weight``; every run holds at least one item."""
    runs: list[range] = []
    start, total = 0, 0
    for n, weight in enumerate(weights):
        total += weight
        if n + 1 - start >= max_items or total >= max_weight:
            runs.append(range(start, n + 1))
            start, total = n + 1, 0
    if start < len(weights):
        runs.append(range(start, len(weights)))
    return runs


def ingest(
    rt: Runtime,
    job_id: str,
    items: Iterable[Record | Rejected],
    on_batch: Callable[[PendingBatch], object],
    *,
    batch_docs: int | None = None,
    group_batches: int = 1,
    task_tokens: Callable[[str], int] | None = None,
) -> None:
    """Stream records into SQL in groups of ``group_batches`` batches, one transaction a
    group; the documents of a group that need embedding become batches of at most
    ``batch_docs`` documents and about ``EMBEDQ_TASK_TOKENS`` tokens (estimated from their
    length; ``task_tokens`` gives the budget for the collection's model where the dispatcher
    knows better), so that a task of short documents still carries full forward passes.

    Each new batch goes to ``on_batch`` with its documents as just stored (a dispatcher that
    embeds here cuts them without reading them back; one that queues uses the id).
    Rejected records become job errors. Nothing is held beyond one group (``GROUP_TOKENS``
    at most, or one batch), so corpora of any size stream through in bounded memory. The
    first group holds one batch, so that its embedding starts while the rest is read. A
    source that may block between records (a pipe) takes groups of one batch, so its records
    are handed on as they come. The job is sealed at the end; a producer whose job is
    cancelled, or whose collection is deleted, stops there without sealing it.
    """
    size = batch_docs or rt.settings.batch_docs
    with transaction(rt.sessions, write=True) as session:
        job = session.get_one(Job, job_id)
        coll = session.execute(
            select(
                Collection.id, Collection.model, Collection.chunk_tokens, Collection.overlap
            ).where(Collection.id == job.collection_id)
        ).one_or_none()
        mark_running(session, job_id)
    if coll is None:
        raise BadInput(f"job {job_id} has no collection")
    # What every batch of the job shares (its collection's settings); each new batch is this
    # with its own id and documents.
    target = PendingBatch(0, coll.id, coll.model, coll.chunk_tokens, coll.overlap, [])
    budget = rt.settings.task_tokens if task_tokens is None else task_tokens(coll.model)
    # Batches a group holds: one in the first, so that embedding starts at once.
    later_batches = max(1, min(group_batches, GROUP_TOKENS // budget))
    per_group = 1
    group: list[Record] = []
    tokens = 0
    errors: list[dict[str, Any]] = []
    checked = -float("inf")
    for item in items:
        # A cancelled job stops taking records; asked once a second, not once a group.
        if not group and not errors and time.monotonic() - checked >= CANCEL_CHECK_S:
            if _cancelled(rt, job_id):
                return
            checked = time.monotonic()
        if isinstance(item, Rejected):
            errors.append(
                {"line": item.line, "id": item.id, "reason": item.reason, "source": item.source}
            )
        else:
            group.append(item)
            tokens += estimated_tokens(item)
        full = len(group) >= size * per_group or tokens >= budget * per_group
        if full or len(errors) >= 1000:
            if not _submit(rt, job_id, target, group, errors, on_batch, size, budget):
                return
            group, errors, tokens, per_group = [], [], 0, later_batches
    if not _submit(rt, job_id, target, group, errors, on_batch, size, budget):
        return
    with rt.sessions.begin() as session:
        seal(session, job_id)


def _cancelled(rt: Runtime, job_id: str) -> bool:
    with rt.sessions() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.cancelled


def _submit(
    rt: Runtime,
    job_id: str,
    target: PendingBatch,
    group: list[Record],
    errors: list[dict[str, Any]],
    on_batch: Callable[[PendingBatch], object],
    size: int,
    budget: int,
) -> bool:
    """Store a group of records and hand on its batches; False when the collection has been
    deleted (its jobs are cancelled: the producer stops)."""
    if not group and not errors:
        return True
    latest = {r.id: r for r in group}  # within a group the last occurrence of an id wins
    docs = [NewDocument(r.id, r.text, r.title, r.meta) for r in latest.values()]

    def store(session: Session) -> tuple[list[int], list[list[tuple[int, str, str]]]] | None:
        if not hold_collection(session, target.collection_id):
            return None
        add_errors(session, job_id, errors)
        pending = upsert_pending(session, target.collection_id, docs)
        count_records(session, job_id, accepted=len(latest), unchanged=len(latest) - len(pending))
        weights = [estimated_tokens(latest[ext]) for _, ext, _ in pending]
        groups = [[pending[n] for n in run] for run in split_by_budget(weights, size, budget)]
        return add_batches(session, job_id, [[row[0] for row in g] for g in groups]), groups

    # write=True: on SQLite the read of the collection row must not begin a snapshot that a
    # chunk writer committing meanwhile makes impossible to upgrade ("database is locked").
    stored = again_on_conflict(rt.sessions, store, write=True)
    if stored is None:
        return False
    batch_ids, groups = stored
    for batch_id, rows in zip(batch_ids, groups, strict=True):
        texts = [(doc_id, latest[ext].title, latest[ext].text, h) for doc_id, ext, h in rows]
        on_batch(replace(target, batch_id=batch_id, docs=texts))
    return True


def embed_batch(rt: Runtime, batch_id: int) -> int:
    """Embed one batch's pending documents and store their chunks; returns documents written."""
    cut = cut_batch(rt, batch_id)
    return 0 if cut is None else store_batch(rt, cut)


@dataclass(slots=True)
class CutBatch:
    """A batch read from SQL and cut into token windows, ready for the forward pass."""

    batch_id: int
    collection_id: int
    model: str
    docs: list[tuple[int, str]]  # (document id, content hash)
    windows: list[list[Window]]


@dataclass(slots=True)
class PendingBatch:
    """A pending batch's documents that need embedding, with its collection's window
    settings: read from SQL, or as the producer has just stored them."""

    batch_id: int
    collection_id: int
    model: str
    chunk_tokens: int | None
    overlap: int | None
    docs: list[tuple[int, str | None, str, str]]  # (document id, title, text, content hash)


def read_batch(rt: Runtime, batch_id: int) -> PendingBatch | None:
    """A pending batch's documents that still need embedding; None when already settled."""
    with rt.sessions() as session:
        # One round trip for the batch and its collection's settings (none: batch or
        # collection gone), one for the documents.
        batch = session.execute(_BATCH.where(JobBatch.id == batch_id)).one_or_none()
        if batch is None or batch.state != BatchState.pending:
            return None
        docs = session.execute(
            select(Document.id, Document.title, Document.text, Document.content_hash).where(
                Document.id.in_(batch.document_ids),
                Document.indexed_hash.is_distinct_from(Document.content_hash),
            )
        ).all()
    rows = [(d.id, d.title, d.text, d.content_hash) for d in docs]
    return PendingBatch(
        batch_id, batch.collection_id, batch.model, batch.chunk_tokens, batch.overlap, rows
    )


def cut(rt: Runtime, read: PendingBatch) -> CutBatch:
    """Cut a pending batch's documents into windows (the tokenizer: the work that can overlap
    another batch's forward pass)."""
    chunker = rt.embedder(read.model).chunker(read.chunk_tokens, read.overlap)
    windows = chunker.split_many([embedding_input(title, text) for _, title, text, _ in read.docs])
    ids = [(doc_id, digest) for doc_id, _, _, digest in read.docs]
    return CutBatch(read.batch_id, read.collection_id, read.model, ids, windows)


def cut_batch(rt: Runtime, batch_id: int) -> CutBatch | None:
    """Read a pending batch and cut it into windows; None when already settled."""
    read = read_batch(rt, batch_id)
    return None if read is None else cut(rt, read)


_BATCH = with_collection(
    JobBatch.state,
    JobBatch.document_ids,
    Collection.id.label("collection_id"),
    Collection.model,
    Collection.chunk_tokens,
    Collection.overlap,
)


def store_batch(rt: Runtime, cut: CutBatch) -> int:
    """Embed a cut batch's windows, then write its chunks and settle it in one transaction."""
    embedded = embed_windows(rt, cut.model, cut.docs, cut.windows)
    try:
        with transaction(rt.sessions, write=True) as session:
            written = write_chunks(session, cut.collection_id, embedded)
            if not settle_batch(session, cut.batch_id):
                raise _Settled
    except (_Settled, NoResultFound):
        # Settled while it was embedded (its job cancelled), or its collection deleted (no
        # row to lock): nothing of it is written.
        log.info("batch %s was settled or its collection deleted meanwhile", cut.batch_id)
        return 0
    return written


class _Settled(Exception):
    """The batch was settled while it was embedded: its chunks must not be written."""


def embed_windows(
    rt: Runtime, model: str, docs: list[tuple[int, str]], windows: list[list[Window]]
) -> list[EmbeddedDocument]:
    """Embed every window of a group of documents together (one length-sorted pass)."""
    if not docs:
        return []
    flat = [w.input_ids for ws in windows for w in ws]
    vectors = rt.embedder(model).encode_ids(flat, rt.settings.batch_tokens)
    count_tokens(model, sum(len(ids) for ids in flat))
    out, row = [], 0
    for (doc_id, digest), ws in zip(docs, windows, strict=True):
        spans = [Span(w.number, w.start, w.end, w.tokens) for w in ws]
        out.append(EmbeddedDocument(doc_id, digest, spans, vectors[row : row + len(ws)]))
        row += len(ws)
    return out


def fail_batch(rt: Runtime, batch_id: int, error: str) -> None:
    with transaction(rt.sessions, write=True) as session:
        settle_batch(session, batch_id, error=error)


def finish(rt: Runtime, job_id: str) -> bool:
    """Finish the job if everything is settled; True only for the call that finished it."""
    # Read then write: on SQLite take the write lock first, or a writer that commits in
    # between makes this transaction fail with "database is locked".
    with transaction(rt.sessions, write=True) as session:
        job = session.get_one(Job, job_id)
        result = {"documents": job.total, "unchanged": job.skipped}
        return try_finish(session, job_id, result)


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: str
    collection: str
    attempts: int


def begin_attempt(rt: Runtime, batch_id: int, worker: str | None = None) -> Attempt | None:
    """Count a delivery of a batch and stamp when and by which worker it began (the reconciler
    requeues a begun batch whose worker is gone); None when the batch is settled or gone."""
    with transaction(rt.sessions, write=True) as session:
        began = begin_delivery(session, batch_id, worker)
    if began is None:
        return None
    attempts, job_id, collection = began
    return Attempt(job_id, collection, attempts)


def job_progress(rt: Runtime, job_id: str) -> dict[str, int]:
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
        return {"done": job.done + job.failed, "total": job.total}
