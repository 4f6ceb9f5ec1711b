"""The index job as plain functions: the embedded runner and the Celery tasks both call these.

Flow: ``start_index_job`` -> ``ingest`` (streams records into SQL, one batch row per group,
hands each batch id to ``dispatch``) -> ``embed_batch`` per batch -> ``catch_up`` -> finish.
Every step is idempotent, so a redelivered task does no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from storage.chunks import EmbeddedDocument, Span, write_chunks
from storage.documents import NewDocument, embedding_input, upsert_documents
from storage.index_store import check_collection_name
from storage.jobs import (
    add_batch,
    add_errors,
    count_records,
    create_job,
    db_now,
    mark_running,
    seal,
    settle_batch,
    try_finish,
)
from storage.models import BatchState, Collection, Document, Job, JobBatch
from storage.readers import Record, Rejected
from tasks.runtime import Runtime
from workers.chunking import Window, text_room, window_settings
from workers.models import ModelError, canonical_spec
from workers.shape import read_shape

log = logging.getLogger(__name__)


class JobInputError(ValueError):
    """A job that cannot start as asked (bad collection name, model mismatch...)."""


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    name: str
    model: str | None = None
    chunk_tokens: int | None = None
    overlap: int | None = None
    index_factory: str = "Flat"


def ensure_collection(rt: Runtime, spec: CollectionSpec) -> Collection:
    """The named collection, created with the spec's settings if it does not exist yet.

    An existing collection keeps its model and windows; asking for different ones is an error
    rather than a silently mixed index.
    """
    check_collection_name(spec.name)
    with rt.sessions.begin() as session:
        coll = session.scalars(select(Collection).where(Collection.name == spec.name)).first()
        if coll is not None:
            _check_matches(coll, spec)
            return coll
    model = canonical_spec(spec.model or rt.settings.model)
    try:
        dim, chunk_tokens, overlap = _collection_shape(rt, model, spec)
    except (ModelError, ValueError) as exc:
        raise JobInputError(str(exc)) from exc
    with rt.sessions.begin() as session:
        coll = Collection(
            name=spec.name,
            model=model,
            dim=dim,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            metric="cosine",
            index_factory=spec.index_factory,
            seq=0,
        )
        session.add(coll)
    return coll


def _collection_shape(rt: Runtime, model: str, spec: CollectionSpec) -> tuple[int, int, int]:
    """Dimension, window and overlap of a new collection: from the model folder's files when
    they say enough (a producer then never loads the model), else from the loaded model."""
    shape = read_shape(model)
    if shape is None:
        embedder = rt.embedder(model)
        chunker = embedder.chunker(spec.chunk_tokens, spec.overlap)
        return embedder.dim, chunker.max_tokens, chunker.overlap
    size, overlap = window_settings(shape.max_tokens, spec.chunk_tokens, spec.overlap)
    text_room(size, shape.special, overlap)
    return shape.dim, size, overlap


def _check_matches(coll: Collection, spec: CollectionSpec) -> None:
    asked = {
        "model": canonical_spec(spec.model) if spec.model else None,
        "chunk_tokens": spec.chunk_tokens,
        "overlap": spec.overlap,
    }
    for field, value in asked.items():
        if value is not None and value != getattr(coll, field):
            raise JobInputError(
                f"collection {coll.name!r} uses {field}={getattr(coll, field)}, not {value}; "
                "index into a new collection to change it"
            )


def start_index_job(rt: Runtime, coll: Collection, params: dict[str, Any]) -> str:
    with rt.sessions.begin() as session:
        return create_job(session, "index", collection_id=coll.id, params=params)


def ingest(
    rt: Runtime,
    job_id: str,
    items: Iterable[Record | Rejected],
    dispatch: Callable[[int], None],
    *,
    batch_docs: int | None = None,
) -> None:
    """Stream records into SQL in groups; each group that needs embedding becomes a batch.

    Rejected records become job errors. Nothing is held beyond one group, so corpora of any
    size stream through in bounded memory. The job is sealed at the end.
    """
    size = batch_docs or rt.settings.batch_docs
    with rt.sessions.begin() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        job = session.get_one(Job, job_id)
        collection_id = job.collection_id
        mark_running(session, job_id)
    if collection_id is None:
        raise JobInputError(f"job {job_id} has no collection")
    group: list[Record] = []
    errors: list[dict[str, Any]] = []
    for item in items:
        if len(group) == 0 and len(errors) == 0 and _cancelled(rt, job_id):
            return
        if isinstance(item, Rejected):
            errors.append(
                {"line": item.line, "id": item.id, "reason": item.reason, "source": item.source}
            )
        else:
            group.append(item)
        if len(group) >= size or len(errors) >= 1000:
            _submit(rt, job_id, collection_id, group, errors, dispatch)
            group, errors = [], []
    _submit(rt, job_id, collection_id, group, errors, dispatch)
    with rt.sessions.begin() as session:
        seal(session, job_id)


def _cancelled(rt: Runtime, job_id: str) -> bool:
    from storage.models import JobStatus

    with rt.sessions() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.cancelled


def _submit(
    rt: Runtime,
    job_id: str,
    collection_id: int,
    group: list[Record],
    errors: list[dict[str, Any]],
    dispatch: Callable[[int], None],
) -> None:
    if not group and not errors:
        return
    docs = [NewDocument(r.id, r.text, r.title, r.meta) for r in group]
    batch_id = None
    with rt.sessions.begin() as session:
        add_errors(session, job_id, errors)
        pending = upsert_documents(session, collection_id, docs)
        accepted = len({d.external_id for d in docs})
        count_records(session, job_id, accepted=accepted, unchanged=accepted - len(pending))
        if pending:
            batch_id = add_batch(session, job_id, pending)
    if batch_id is not None:
        dispatch(batch_id)


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


def cut_batch(rt: Runtime, batch_id: int) -> CutBatch | None:
    """Read a pending batch's documents and cut them into windows (SQL and the tokenizer:
    the work that can overlap another batch's forward pass). None when already settled."""
    with rt.sessions() as session:
        batch = session.get(JobBatch, batch_id)
        if batch is None or batch.state != BatchState.pending:
            return None
        job = session.get_one(Job, batch.job_id)
        coll = session.get_one(Collection, job.collection_id)
        docs = session.execute(
            select(Document.id, Document.title, Document.text, Document.content_hash).where(
                Document.id.in_(batch.document_ids),
                Document.indexed_hash.is_distinct_from(Document.content_hash),
            )
        ).all()
        chunker = rt.embedder(coll.model).chunker(coll.chunk_tokens, coll.overlap)
        windows = chunker.split_many([embedding_input(d.title, d.text) for d in docs])
        ids = [(d.id, d.content_hash) for d in docs]
        return CutBatch(batch_id, coll.id, coll.model, ids, windows)


def store_batch(rt: Runtime, cut: CutBatch) -> int:
    """Embed a cut batch's windows, then write its chunks and settle it in one transaction."""
    embedded = embed_windows(rt, cut.model, cut.docs, cut.windows)
    with rt.sessions.begin() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        written = write_chunks(session, cut.collection_id, embedded)
        settle_batch(session, cut.batch_id)
    return written


def embed_windows(
    rt: Runtime, model: str, docs: list[tuple[int, str]], windows: list[list[Window]]
) -> list[EmbeddedDocument]:
    """Embed every window of a group of documents together (one length-sorted pass)."""
    if not docs:
        return []
    flat = [w.input_ids for ws in windows for w in ws]
    vectors = rt.embedder(model).encode_ids(flat, rt.settings.batch_tokens)
    out, row = [], 0
    for (doc_id, digest), ws in zip(docs, windows, strict=True):
        spans = [Span(w.number, w.start, w.end, w.tokens) for w in ws]
        out.append(EmbeddedDocument(doc_id, digest, spans, vectors[row : row + len(ws)]))
        row += len(ws)
    return out


def fail_batch(rt: Runtime, batch_id: int, error: str) -> None:
    with rt.sessions.begin() as session:
        settle_batch(session, batch_id, error=error)


def catch_up(rt: Runtime, collection: str) -> None:
    """Bring the collection's published index up to date (the single writer's work)."""
    rt.writer.catch_up(collection)


def finish(rt: Runtime, job_id: str) -> bool:
    """Finish the job if everything is settled; True only for the call that finished it."""
    with rt.sessions.begin() as session:
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
    with rt.sessions.begin() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        batch = session.get(JobBatch, batch_id)
        if batch is None or batch.state != BatchState.pending:
            return None
        batch.attempts += 1
        batch.started_at = db_now(session)
        batch.worker = worker
        job = session.get_one(Job, batch.job_id)
        coll = session.get_one(Collection, job.collection_id)
        return Attempt(job.id, coll.name, batch.attempts)


def job_progress(rt: Runtime, job_id: str) -> dict[str, int]:
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
        return {"done": job.done + job.failed, "total": job.total}


def ingest_file(
    rt: Runtime, job_id: str, path: str, fmt: str | None, dispatch: Any, *, inline: bool = False
) -> None:
    """Ingest an uploaded corpus file for a queued job once, then finish it if it can.

    A second delivery of the same job (the first one crashed mid-way) does not ingest again,
    which would count records twice: the job is failed and the upload must be resubmitted.
    Uploads under the data folder are removed once read.
    """
    from storage.jobs import fail_job
    from storage.models import JobStatus
    from storage.readers import read_corpus

    with rt.sessions() as session:
        job = session.get(Job, job_id)
        status = job.status if job else None
    if status != JobStatus.queued:
        if status == JobStatus.running:
            with rt.sessions.begin() as session:
                fail_job(session, job_id, "ingestion was interrupted; submit the file again")
        return
    try:
        ingest(rt, job_id, read_corpus([path], fmt=fmt), dispatch.embed)
        if inline:
            with rt.sessions() as session:
                coll = session.get_one(Collection, session.get_one(Job, job_id).collection_id)
            dispatch.catch_up(coll.name)
    except Exception as exc:
        with rt.sessions.begin() as session:
            fail_job(session, job_id, f"cannot ingest the upload: {exc}")
        raise
    finally:
        upload = Path(path)
        if upload.parent == rt.settings.data_dir / "uploads":
            upload.unlink(missing_ok=True)
    finish(rt, job_id)


def resume(rt: Runtime, dispatch: Any, job_id: str | None = None) -> list[dict[str, Any]]:
    """Hand the pending batches of running index jobs on again, then finish what can finish.

    For after a broker lost its queue or workers were down: SQL knows every batch that is not
    done, and embedding a batch twice is harmless. A job whose producer stopped before
    submitting everything (not sealed) cannot finish; it is reported, not touched.
    """
    from storage.models import JobStatus

    with rt.sessions() as session:
        query = select(Job).where(Job.kind == "index", Job.status == JobStatus.running)
        if job_id:
            query = select(Job).where(Job.id == job_id)
        jobs = list(session.scalars(query))
        pending = {
            j.id: list(
                session.scalars(
                    select(JobBatch.id).where(
                        JobBatch.job_id == j.id, JobBatch.state == BatchState.pending
                    )
                )
            )
            for j in jobs
        }
        names = {
            j.id: session.get_one(Collection, j.collection_id).name
            for j in jobs
            if j.collection_id is not None
        }
    report = []
    for job in jobs:
        for batch_id in pending[job.id]:
            dispatch.embed(batch_id)
        if pending[job.id] and job.id in names:
            dispatch.catch_up(names[job.id])
        finished = finish(rt, job.id)
        report.append(
            {
                "id": job.id,
                "requeued": len(pending[job.id]),
                "sealed": job.sealed,
                "finished": finished,
            }
        )
    return report
