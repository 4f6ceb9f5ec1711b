"""Search a collection: the published snapshot plus the rows committed after it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.chunks import vectors_from_rows
from storage.models import SEQ_BITS, Chunk, Collection, Document
from tasks.runtime import Runtime

MAX_K = 1000
TAIL_PAGE = 20_000


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    start: int
    end: int
    window: int

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "chunk": {"start": self.start, "end": self.end, "window": self.window},
        }


class SearchError(LookupError):
    """Unknown collection or unusable request."""


def get_collection(session: Session, name: str) -> Collection:
    coll = session.scalars(select(Collection).where(Collection.name == name)).first()
    if coll is None:
        raise SearchError(f"no collection named {name!r}")
    return coll


def search(rt: Runtime, name: str, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
    """Top-``k`` documents per query, best chunk per document, highest score first.

    All queries go through one forward pass and one ``index.search``; a query whose first
    candidates fold to fewer than ``k`` documents (several chunks of one document, deleted
    chunks) asks the index again for four times as many."""
    if not 1 <= k <= MAX_K:
        raise SearchError(f"k must be between 1 and {MAX_K}")
    with rt.sessions() as session:
        coll = get_collection(session, name)
        embedder = rt.embedder(coll.model)
        qv = embedder.encode_texts(queries, coll.chunk_tokens)
        snap = rt.snapshots.get(name, model=coll.model, dim=coll.dim)
        watermark = snap[1].watermark if snap else 0
        # Rows above the snapshot: held by the process, only newer ones are read from SQL.
        floor = (coll.id << SEQ_BITS) | watermark
        tail = rt.snapshots.tail(name, key=coll.id, dim=coll.dim, floor=floor)
        tail_ids, tail_vecs = tail.read(
            floor,
            lambda after: _rows_after(session, coll, after),
            upto=(coll.id << SEQ_BITS) | coll.seq,
        )
        index = snap[0] if snap else None
        # FAISS splits one query's scan across threads poorly: 1 thread measured faster.
        with search_threads(rt.settings.search_threads if len(queries) == 1 else 0):
            fetch = min(max(4 * k, 32), MAX_K * 4)
            found = _candidates(index, qv, tail_ids, tail_vecs, fetch)
            results = []
            for row in range(len(queries)):
                ids, scores, exhausted = found[row]
                hits = _fold(session, ids, scores, k)
                wider = fetch
                while len(hits) < k and not exhausted:
                    wider *= 4
                    query = qv[row : row + 1]
                    ((ids, scores, exhausted),) = _candidates(
                        index, query, tail_ids, tail_vecs, wider
                    )
                    hits = _fold(session, ids, scores, k)
                results.append(hits)
        return results


@contextmanager
def search_threads(threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads for this thread's searches (an OpenMP setting per thread)."""
    if not threads:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _rows_after(
    session: Session, coll: Collection, after: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The collection's rows with ids above ``after``, in pages, ascending."""
    end = (coll.id + 1) << SEQ_BITS
    while True:
        rows = session.execute(
            select(Chunk.id, Chunk.vector)
            .where(Chunk.id > after, Chunk.id < end)
            .order_by(Chunk.id)
            .limit(TAIL_PAGE)
        ).all()
        if not rows:
            return
        ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
        yield ids, vectors_from_rows([r.vector for r in rows], coll.dim)
        if len(rows) < TAIL_PAGE:
            return
        after = int(ids[-1])


def _candidates(
    index: Any,
    queries: np.ndarray,
    tail_ids: np.ndarray,
    tail_vecs: np.ndarray,
    fetch: int,
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Per query: the best ``fetch`` chunk ids of snapshot and tail, best first, and whether
    nothing else is left to ask for."""
    n = int(index.ntotal) if index is not None else 0
    take = min(fetch, n)
    if take:
        snap_scores, snap_ids = index.search(queries, take)
    tail_scores = queries @ tail_vecs.T
    out = []
    for row in range(len(queries)):
        ids, scores = tail_ids, tail_scores[row]
        if take:
            keep = snap_ids[row] >= 0
            ids = np.concatenate([ids, snap_ids[row][keep]])
            scores = np.concatenate([scores, snap_scores[row][keep]])
        order = np.argsort(-scores, kind="stable")
        exhausted = take >= n and len(order) <= fetch
        order = order[:fetch]
        out.append((ids[order], scores[order], exhausted))
    return out


def _fold(session: Session, ids: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
    """Map chunk ids to documents, keep each document's best chunk; drop deleted chunks."""
    if not len(ids):
        return []
    rows = session.execute(
        select(Chunk.id, Chunk.window, Chunk.start, Chunk.end, Document.external_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_([int(i) for i in ids]))
    ).all()
    by_id = {r.id: r for r in rows}
    hits: list[Hit] = []
    seen: set[str] = set()
    for chunk, score in zip(ids.tolist(), scores.tolist(), strict=True):
        row = by_id.get(chunk)
        if row is None or row.external_id in seen:
            continue
        seen.add(row.external_id)
        hits.append(Hit(row.external_id, float(score), row.start, row.end, row.window))
        if len(hits) == k:
            break
    return hits
