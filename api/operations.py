"""What the HTTP routes do, kept apart from request parsing so each route stays small.

Errors a client can fix are raised as ``HTTPException`` with a one-line ``detail``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.exc import IntegrityError

from api.background import JobRunner
from api.limits import MAX_RECORD_BYTES
from api.schemas import MAX_DOCUMENTS, CollectionCreate, CollectionView
from storage.collections import collection_counts, find_collection
from storage.documents import delete_document
from storage.index_store import new_index
from storage.jobs import add_errors, fail_job
from storage.models import Collection
from storage.readers import Record, Rejected, record_from_object
from tasks.dispatch import Dispatcher, InlineDispatcher, dispatcher_for
from tasks.indexing import (
    CollectionSpec,
    JobInputError,
    ensure_collection,
    finish,
    ingest,
    start_index_job,
)
from tasks.runtime import Runtime
from workers.models import ModelError, canonical_spec

log = logging.getLogger(__name__)

REQUEST_SOURCE = "request"
"""The ``source`` of errors for records sent in a JSON request body."""

UPLOAD_FORMAT = "jsonl"


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, what)


def lookup(rt: Runtime, name: str) -> Collection:
    """The named collection, or a 404."""
    with rt.sessions() as session:
        coll = find_collection(session, name)
    if coll is None:
        raise not_found(f"no collection named {name!r}")
    return coll


# ------------------------------------------------------------------------------ collections


def create_collection(rt: Runtime, body: CollectionCreate) -> tuple[Collection, bool]:
    """The collection as asked and whether it was created now (False: it already existed).

    Asking again with the same settings is fine; different settings are a 409.
    """
    spec = CollectionSpec(
        body.name, body.model, body.chunk_tokens, body.overlap, body.index or "Flat"
    )
    with rt.sessions() as session:
        existing = find_collection(session, body.name)
    if existing is not None:
        return _reuse(rt, spec, body.index), False
    if body.index is not None:
        _check_factory(rt, spec)
    try:
        return ensure_collection(rt, spec), True
    except IntegrityError:
        # Created by a concurrent request between our look-up and our insert.
        return _reuse(rt, spec, body.index), False
    except (JobInputError, ModelError, ValueError, OSError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


def _reuse(rt: Runtime, spec: CollectionSpec, index: str | None) -> Collection:
    try:
        coll = ensure_collection(rt, spec)
    except (JobInputError, ModelError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if index is not None and index != coll.index_factory:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"collection {coll.name!r} uses index={coll.index_factory}, not {index}; "
            "index into a new collection to change it",
        )
    return coll


def _check_factory(rt: Runtime, spec: CollectionSpec) -> None:
    """Refuse a FAISS factory string that cannot build an index for the model's dimension."""
    try:
        dim = rt.embedder(canonical_spec(spec.model or rt.settings.model)).dim
    except (ModelError, ValueError, OSError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        new_index(dim, spec.index_factory)
    except RuntimeError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"index {spec.index_factory!r} is not a FAISS index factory string "
            f"usable with {dim} dimensions",
        ) from exc


def collection_view(rt: Runtime, coll: Collection) -> CollectionView:
    with rt.sessions() as session:
        counts = collection_counts(session, coll.id)
    meta = rt.store.meta(coll.name)
    return CollectionView(
        name=coll.name,
        model=coll.model,
        dim=coll.dim,
        chunk_tokens=coll.chunk_tokens,
        overlap=coll.overlap,
        metric=coll.metric,
        index=coll.index_factory,
        documents=counts.documents,
        chunks=counts.chunks,
        indexed=meta.count if meta is not None else 0,
    )


def remove_document(rt: Runtime, runner: JobRunner, name: str, external_id: str) -> None:
    """Delete a document and its chunks, then bring the index up to date."""
    with rt.sessions.begin() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        coll = find_collection(session, name)
        if coll is None:
            raise not_found(f"no collection named {name!r}")
        if not delete_document(session, coll.id, external_id):
            raise not_found(f"no document {external_id!r} in collection {name!r}")
    try:
        runner.catch_up(rt, name)
    except Exception:
        # The deletion is committed and search already leaves the document out; the next
        # catch-up removes its vectors from the index.
        log.exception("catch-up of %s after a deletion failed", name)


# -------------------------------------------------------------------------------- index jobs


def validate_records(documents: Iterable[Any]) -> Iterator[Record | Rejected]:
    """Check each object as a JSONL line is checked; a repeated id is rejected, as in a file.

    A record whose title and text exceed ``MAX_RECORD_BYTES`` in UTF-8 is rejected too.
    """
    seen: set[str] = set()
    for line, obj in enumerate(documents, 1):
        item = record_from_object(obj, source=REQUEST_SOURCE, line=line)
        if isinstance(item, Record):
            size = _utf8_size(item.text) + _utf8_size(item.title or "")
            if size > MAX_RECORD_BYTES:
                reason = f"text too large ({size} bytes; at most {MAX_RECORD_BYTES})"
                item = Rejected(item.source, item.line, reason, item.id)
            elif item.id in seen:
                item = Rejected(item.source, item.line, "duplicate id", item.id)
            else:
                seen.add(item.id)
        yield item


def _utf8_size(text: str) -> int:
    # At most 4 bytes a character: only long texts need encoding to be measured.
    if 4 * len(text) <= MAX_RECORD_BYTES:
        return len(text)
    return len(text.encode("utf-8", errors="surrogatepass"))


def submit_documents(rt: Runtime, runner: JobRunner, name: str, documents: list[Any]) -> str:
    """Start an index job for documents sent in a request; returns its id."""
    if len(documents) > MAX_DOCUMENTS:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(documents)} documents in one request; at most {MAX_DOCUMENTS} "
            f"(upload larger corpora as NDJSON to /v1/collections/{name}/uploads)",
        )
    coll = lookup(rt, name)
    items = list(validate_records(documents))
    job_id = start_index_job(rt, coll, {"source": REQUEST_SOURCE, "records": len(items)})
    dispatcher = dispatcher_for(rt, job_id)
    if isinstance(dispatcher, InlineDispatcher):
        runner.submit(rt, job_id, partial(_index_here, rt, runner, job_id, name, items))
    else:
        _hand_on(rt, job_id, partial(_queue_records, rt, job_id, items, dispatcher))
    return job_id


def _index_here(
    rt: Runtime, runner: JobRunner, job_id: str, name: str, items: list[Record | Rejected]
) -> None:
    dispatcher = dispatcher_for(rt, job_id)
    ingest(rt, job_id, items, dispatcher.embed)
    runner.catch_up(rt, name)
    finish(rt, job_id)


def _queue_records(
    rt: Runtime, job_id: str, items: list[Record | Rejected], dispatcher: Dispatcher
) -> None:
    ingest(rt, job_id, items, dispatcher.embed)
    finish(rt, job_id)


def _hand_on(rt: Runtime, job_id: str, work: Callable[[], None]) -> None:
    """Run the queueing part of a job now; if it cannot be queued, fail the job and say so."""
    try:
        work()
    except Exception as exc:
        log.exception("cannot queue job %s", job_id)
        with rt.sessions.begin() as session:
            fail_job(session, job_id, f"cannot queue the job: {exc}")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot queue the job: {exc}"
        ) from exc


# ----------------------------------------------------------------------------------- uploads


def start_upload(rt: Runtime, name: str) -> tuple[str, Path]:
    """Create the index job of an upload; returns its id and where the upload is written."""
    coll = lookup(rt, name)
    job_id = start_index_job(rt, coll, {"source": "upload", "format": UPLOAD_FORMAT})
    folder = rt.settings.data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return job_id, folder / f"{job_id}.{UPLOAD_FORMAT}"


def abandon_upload(rt: Runtime, job_id: str, path: Path, reason: str) -> None:
    path.unlink(missing_ok=True)
    with rt.sessions.begin() as session:
        fail_job(session, job_id, reason)


def ingest_upload(
    rt: Runtime,
    runner: JobRunner,
    name: str,
    job_id: str,
    path: Path,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Index a stored upload: in the background here, or by a worker with a broker.

    ``errors`` are records refused while the upload streamed in (too large); they are the
    job's first errors.
    """
    if errors:
        with rt.sessions.begin() as session:
            session.connection(execution_options={"sqlite_immediate": True})
            add_errors(session, job_id, errors)
    dispatcher = dispatcher_for(rt, job_id)
    if isinstance(dispatcher, InlineDispatcher):
        runner.submit(rt, job_id, partial(_ingest_upload_here, rt, runner, name, job_id, path))
        return
    try:
        _hand_on(rt, job_id, partial(dispatcher.ingest_file, job_id, str(path), UPLOAD_FORMAT))
    except HTTPException:
        path.unlink(missing_ok=True)
        raise


def _ingest_upload_here(rt: Runtime, runner: JobRunner, name: str, job_id: str, path: Path) -> None:
    try:
        dispatcher_for(rt, job_id).ingest_file(job_id, str(path), UPLOAD_FORMAT)
        runner.catch_up(rt, name)
    finally:
        path.unlink(missing_ok=True)
