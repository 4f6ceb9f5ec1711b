"""Collections as a user manages them: list, show and delete (the CLI and HTTP both call
these)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from embedq.storage.collection_delete import DeletedRows, delete_collection_rows
from embedq.storage.collection_files import remove_collection_folder
from embedq.storage.collections import collection_counts, find_collection
from embedq.storage.db import again_on_conflict
from embedq.storage.index_store import IndexStore, check_collection_name
from embedq.storage.listing import collection_page
from embedq.storage.models import Collection
from embedq.tasks.cursors import BadCursor, decode_cursor, encode_cursor
from embedq.tasks.errors import BadInput, NotFound
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)
CURSOR_KIND = "collections"
MAX_LIMIT = 1000


class CollectionNotFound(NotFound):
    """No collection of that name."""


def collection_info(session: Session, store: IndexStore, coll: Collection) -> dict[str, Any]:
    """A collection's settings and sizes: stored documents and chunks, and the vectors in its
    published index."""
    counts = collection_counts(session, coll.id)
    meta = store.meta(coll.name)
    return {
        "name": coll.name,
        "model": coll.model,
        "dim": coll.dim,
        "chunk_tokens": coll.chunk_tokens,
        "overlap": coll.overlap,
        "metric": coll.metric,
        "index": coll.index_factory,
        "documents": counts.documents,
        "chunks": counts.chunks,
        "indexed": meta.count if meta is not None else 0,
    }


def list_collections(rt: Runtime, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """One page of collections by name: ``{"collections": [...], "next": cursor | None}``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    after = None
    if cursor:
        (after,) = decode_cursor(CURSOR_KIND, cursor, 1)
        try:
            check_collection_name(after)
        except (TypeError, ValueError) as exc:
            raise BadCursor(f"invalid cursor {cursor[:40]!r}") from exc
    with rt.sessions() as session:
        rows, more = collection_page(session, limit=limit, after=after)
        items = [collection_info(session, rt.store, coll) for coll in rows]
    last = rows[-1].name if rows and more else None
    return {
        "collections": items,
        "next": encode_cursor(CURSOR_KIND, [last]) if last is not None else None,
    }


def show_collection(rt: Runtime, name: str) -> dict[str, Any]:
    """One collection's settings and sizes; CollectionNotFound if there is none."""
    with rt.sessions() as session:
        coll = find_collection(session, name)
        if coll is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        return collection_info(session, rt.store, coll)


@dataclass(frozen=True, slots=True)
class Deleted:
    name: str
    documents: int
    chunks: int
    cancelled_jobs: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "documents": self.documents,
            "chunks": self.chunks,
            "cancelled_jobs": self.cancelled_jobs,
        }


def delete_collection(rt: Runtime, name: str) -> Deleted:
    """Delete a collection: its rows, vectors and index files, and its pending work.

    Its queued or running jobs are cancelled (a batch being embedded is not written; a batch
    message still queued finds nothing to do), uploads waiting for them are removed, and the
    name can be used again as soon as this returns.
    """
    try:
        check_collection_name(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc

    def delete_in(session: Session) -> DeletedRows:
        coll = find_collection(session, name)
        if coll is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        return delete_collection_rows(session, coll)

    rows = again_on_conflict(rt.sessions, delete_in, write=True)
    remove_collection_folder(rt.store, name)
    for job_id, params in rows.cancelled.items():
        _remove_upload(rt, job_id, params)
    rt.writer.forget(name)
    rt.snapshots.forget(name)
    log.info(
        "deleted collection %s: %d documents, %d chunks, %d job(s) cancelled",
        name,
        rows.documents,
        rows.chunks,
        len(rows.cancelled),
    )
    return Deleted(name, rows.documents, rows.chunks, sorted(rows.cancelled))


def _remove_upload(rt: Runtime, job_id: str, params: dict[str, Any]) -> None:
    """An upload waiting for a cancelled job is never read: remove it."""
    if params.get("source") != "upload":
        return
    folder = rt.settings.data_dir / "uploads"
    for path in folder.glob(f"{job_id}.*"):
        Path(path).unlink(missing_ok=True)
