"""Search a collection: dense (FAISS snapshot plus the rows above it), sparse (the BM25 index
of its windows), or both fused; optionally within a metadata filter and re-ranked.

Every mode scores windows and keeps each document's best one. The API, the CLI and the
evaluation job all call :func:`search`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from embedq.storage.chunks import vectors_from_rows
from embedq.storage.documents import embedding_input
from embedq.storage.filters import FilterError, compile_filter, parse_filter
from embedq.storage.index_params import search_parameters
from embedq.storage.lexical import collection_key, tail_reader
from embedq.storage.models import SEQ_BITS, Chunk, Collection, Document
from embedq.tasks.fusion import METHODS, mix, rrf
from embedq.tasks.rerank import RerankError, window_scores
from embedq.tasks.runtime import Runtime

MAX_K = 1000
Mode = Literal["dense", "sparse", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "hybrid")
DEFAULT_MODE: Mode = "hybrid"
TAIL_PAGE = 20_000
FOLD_PAGE = 1_000
MAX_FETCH = 1 << 20
EXACT_CHUNKS = 20_000
"""A filter matching at most this many windows is searched exactly over their stored vectors."""
SPARSE_SELECT = 100_000
"""A filter matching at most this many windows restricts the BM25 query to their documents."""
ID_PAGE = 5_000
"""Ids bound to one ``IN`` list at most."""
MAX_CANDIDATES = 1000


class SearchError(LookupError):
    """Unknown collection or unusable request."""


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """How to search; the defaults are what the evaluations in BENCHMARKS.md favour."""

    mode: str = DEFAULT_MODE
    filter: dict[str, Any] | None = None
    fusion: str = "mix"
    alpha: float = 0.5  # weight of the dense side in ``mix``
    rrf_k: int = 60
    candidates: int = 100  # documents taken from each side before fusing or re-ranking
    nprobe: int | None = None
    ef_search: int | None = None
    meta: bool = True
    rerank: str | None = None  # a cross-encoder checkpoint (a local folder)

    def check(self, k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}")
        if self.mode not in MODES:
            raise SearchError(f"unknown mode {self.mode!r}; use {', '.join(MODES)}")
        if self.fusion not in METHODS:
            raise SearchError(f"unknown fusion {self.fusion!r}; use {', '.join(METHODS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise SearchError("alpha must be between 0 and 1")
        if self.rrf_k < 1 or not 1 <= self.candidates <= MAX_CANDIDATES:
            raise SearchError(f"rrf_k must be >= 1 and candidates 1..{MAX_CANDIDATES}")
        for name in ("nprobe", "ef_search"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65_536:
                raise SearchError(f"{name} must be between 1 and 65536")


@dataclass(slots=True)
class Hit:
    id: str
    score: float
    start: int
    end: int
    window: int
    title: str | None = None
    meta: dict[str, Any] | None = None
    text: str | None = None
    with_meta: bool = field(default=True, repr=False)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "score": round(self.score, 6)}
        out["title"] = self.title
        if self.with_meta:
            out["meta"] = self.meta
        chunk: dict[str, object] = {"start": self.start, "end": self.end, "window": self.window}
        if self.text is not None:
            chunk["text"] = self.text
        out["chunk"] = chunk
        return out


@dataclass(frozen=True, slots=True)
class Window:
    """A document's best window for one ranking."""

    doc: int
    score: float
    chunk: int
    window: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Allowed:
    """What a filter lets through: its SQL condition and, when few enough match to list
    them, the matching documents that have windows and how many windows they have."""

    where: ColumnElement[bool]
    docs: list[int] | None  # None: more windows match than the search asked to list
    chunks: list[int] | None


def get_collection(session: Session, name: str) -> Collection:
    coll = session.scalars(select(Collection).where(Collection.name == name)).first()
    if coll is None:
        raise SearchError(f"no collection named {name!r}")
    return coll


def search(
    rt: Runtime,
    name: str,
    queries: Sequence[str],
    k: int = 10,
    options: SearchOptions | None = None,
) -> list[list[Hit]]:
    """Top-``k`` documents per query, best window per document, highest score first."""
    opts = options or SearchOptions()
    opts.check(k)
    with rt.sessions() as session:
        coll = get_collection(session, name)
        # One pass of the filter over the collection lists what it lets through, for every
        # query and both sides: as many windows as BM25 may be restricted to, or (dense
        # only) as many as an exact search may score.
        listed = EXACT_CHUNKS if opts.mode == "dense" else SPARSE_SELECT
        allowed = _allowed(session, coll, opts.filter, listed)
        if allowed is not None and allowed.docs == []:
            return [[] for _ in queries]
        pool = k if opts.mode != "hybrid" and not opts.rerank else max(k, opts.candidates)
        dense = sparse = None
        if opts.mode != "sparse":
            dense = _dense(rt, session, coll, queries, pool, allowed, opts)
        if opts.mode != "dense":
            sparse = [_sparse(rt, session, coll, q, pool, allowed) for q in queries]
        ranked = [_combine(dense, sparse, row, opts) for row in range(len(queries))]
        if opts.rerank:
            ranked = [
                _rerank(rt, session, opts.rerank, q, found)
                for q, found in zip(queries, ranked, strict=True)
            ]
        return [_describe(session, found[:k], opts.meta) for found in ranked]


def _combine(
    dense: list[list[Window]] | None, sparse: list[list[Window]] | None, row: int, o: SearchOptions
) -> list[Window]:
    if dense is None:
        return sparse[row] if sparse is not None else []
    if sparse is None:
        return dense[row]
    by_doc = {w.doc: w for w in sparse[row]}
    by_doc.update({w.doc: w for w in dense[row]})
    d = [(w.doc, w.score) for w in dense[row]]
    s = [(w.doc, w.score) for w in sparse[row]]
    fused = mix(d, s, o.alpha) if o.fusion == "mix" else rrf(d, s, k=o.rrf_k)
    out = []
    for doc, score in fused:
        w = by_doc[doc]
        out.append(Window(doc, score, w.chunk, w.window, w.start, w.end))
    return out


def _rerank(
    rt: Runtime, session: Session, model: str, query: str, found: list[Window]
) -> list[Window]:
    """The candidates ordered by a cross-encoder's score, which replaces theirs."""
    try:
        scores = window_scores(rt, session, model, query, [(w.doc, w.start, w.end) for w in found])
    except RerankError as exc:
        raise SearchError(str(exc)) from exc
    scored = [
        replace(w, score=score) for w, score in zip(found, scores, strict=True) if score is not None
    ]
    return sorted(scored, key=lambda w: -w.score)


# --- filters -------------------------------------------------------------------------------


def _allowed(
    session: Session, coll: Collection, spec: dict[str, Any] | None, listed: int
) -> Allowed | None:
    """The filter's condition, and the windows it lets through (with their documents) when
    at most ``listed`` match: one pass, which stops past ``listed``."""
    if spec is None:
        return None
    try:
        where = compile_filter(parse_filter(spec), session.get_bind().dialect.name)
    except FilterError as exc:
        raise SearchError(str(exc)) from exc
    rows = session.execute(
        select(Chunk.id, Chunk.document_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Document.collection_id == coll.id, where)
        .limit(listed + 1)
    ).all()
    if len(rows) > listed:
        return Allowed(where, None, None)
    docs = sorted({int(r.document_id) for r in rows})
    return Allowed(where, docs, [int(r.id) for r in rows])


def _live_documents(session: Session, coll: Collection, allowed: Allowed | None) -> int:
    """Documents that have windows (and pass the filter, when it listed them): no search can
    return more. A broad filter's documents are not counted (a pass over the collection);
    all the collection's stand in for them."""
    if allowed is not None and allowed.docs is not None:
        return len(allowed.docs)
    return int(
        session.scalar(
            select(func.count())
            .select_from(Document)
            .where(Document.collection_id == coll.id, Document.indexed_hash.is_not(None))
        )
        or 0
    )


# --- dense ---------------------------------------------------------------------------------


def _dense(
    rt: Runtime,
    session: Session,
    coll: Collection,
    queries: Sequence[str],
    want: int,
    allowed: Allowed | None,
    opts: SearchOptions,
) -> list[list[Window]]:
    qv = rt.query_embedder(coll.model).encode_texts(queries, coll.chunk_tokens)
    if allowed is not None and allowed.chunks is not None and len(allowed.chunks) <= EXACT_CHUNKS:
        return _dense_exact(session, coll, qv, want, allowed.chunks)
    snap = rt.snapshots.get(coll.name, model=coll.model, dim=coll.dim)
    watermark = snap[1].watermark if snap else 0
    # Rows above the snapshot: held by the process, only newer ones are read from SQL.
    floor = (coll.id << SEQ_BITS) | watermark
    tail = rt.snapshots.tail(coll.name, key=coll.id, dim=coll.dim, floor=floor)
    tail_ids, tail_vecs = tail.read(
        floor,
        lambda after: _rows_after(session, coll, after),
        upto=(coll.id << SEQ_BITS) | coll.seq,
    )
    index = snap[0] if snap else None
    where = allowed.where if allowed is not None else None
    limit: int | None = None
    # FAISS splits one query's scan across threads poorly: 1 thread measured faster.
    with search_threads(rt.settings.search_threads if len(queries) == 1 else 0):
        fetch = min(max(4 * want, 32), MAX_K * 4)
        found = _candidates(index, qv, tail_ids, tail_vecs, fetch, opts)
        results = []
        for row in range(len(queries)):
            ids, scores, exhausted = found[row]
            hits = _fold(session, ids, scores, want, where)
            wider = fetch
            while len(hits) < want and not exhausted and wider < MAX_FETCH:
                if limit is None:
                    limit = _live_documents(session, coll, allowed)
                if len(hits) >= limit:
                    break
                wider *= 4
                ((ids, scores, exhausted),) = _candidates(
                    index, qv[row : row + 1], tail_ids, tail_vecs, wider, opts
                )
                hits = _fold(session, ids, scores, want, where)
            results.append(hits)
    return results


def _dense_exact(
    session: Session, coll: Collection, qv: np.ndarray, want: int, chunks: list[int]
) -> list[list[Window]]:
    """Score every window a filter lets through from its stored vector (a selective filter:
    cheaper than asking the index for ever more candidates)."""
    rows = [
        row
        for page in range(0, len(chunks), ID_PAGE)
        for row in session.execute(
            select(Chunk.id, Chunk.vector).where(Chunk.id.in_(chunks[page : page + ID_PAGE]))
        )
    ]
    ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
    scores = qv @ vectors_from_rows([r.vector for r in rows], coll.dim).T
    out = []
    for row in range(len(qv)):
        order = np.argsort(-scores[row], kind="stable")
        out.append(_fold(session, ids[order], scores[row][order], want, None))
    return out


@contextmanager
def search_threads(threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads for this thread's searches (an OpenMP setting per thread)."""
    if not threads:
        yield
        return
    import faiss

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
    opts: SearchOptions | None = None,
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Per query: the best ``fetch`` chunk ids of snapshot and tail, best first, and whether
    nothing else is left to ask for."""
    n = int(index.ntotal) if index is not None else 0
    take = min(fetch, n)
    if take:
        o = opts or SearchOptions()
        _, params = search_parameters(index, take, o.nprobe, o.ef_search)
        snap_scores, snap_ids = index.search(queries, take, params=params)
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


def _fold(
    session: Session,
    ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    k: int,
    where: ColumnElement[bool] | None,
) -> list[Window]:
    """Map chunk ids (best first) to documents, keeping each document's best window; drop
    deleted chunks and documents outside ``where``. Reads the ids in pages and stops once it
    has ``k`` documents, so a long candidate list costs only what is read of it."""
    ids = [int(i) for i in ids]
    scores = [float(s) for s in scores]
    hits: list[Window] = []
    seen: set[int] = set()
    for start in range(0, len(ids), FOLD_PAGE):
        page = ids[start : start + FOLD_PAGE]
        query = select(Chunk.id, Chunk.document_id, Chunk.window, Chunk.start, Chunk.end).where(
            Chunk.id.in_(page)
        )
        if where is not None:
            query = query.join(Document, Document.id == Chunk.document_id).where(where)
        by_id = {r.id: r for r in session.execute(query)}
        for chunk, score in zip(page, scores[start : start + FOLD_PAGE], strict=True):
            row = by_id.get(chunk)
            if row is None or row.document_id in seen:
                continue
            seen.add(row.document_id)
            hits.append(Window(row.document_id, score, chunk, row.window, row.start, row.end))
            if len(hits) == k:
                return hits
    return hits


# --- sparse --------------------------------------------------------------------------------


def _sparse(
    rt: Runtime,
    session: Session,
    coll: Collection,
    text: str,
    want: int,
    allowed: Allowed | None,
) -> list[Window]:
    docs: list[int] | None = None
    where = allowed.where if allowed is not None else None
    if allowed is not None and allowed.docs is not None:
        docs, where = allowed.docs, None
    fetch = max(4 * want, 32)
    limit: int | None = None
    reader = tail_reader(session, coll.id)
    while True:
        ids, scores = rt.lexical.search(
            coll.name, collection_key(coll), text, fetch, docs, (coll.seq, reader)
        )
        hits = _fold(session, ids, scores, want, where)
        if len(hits) >= want or len(ids) < fetch or fetch >= MAX_FETCH:
            return hits
        if limit is None:
            limit = _live_documents(session, coll, allowed)
        if len(hits) >= limit:
            return hits
        fetch *= 4


# --- hits ----------------------------------------------------------------------------------


def _describe(session: Session, found: list[Window], with_meta: bool) -> list[Hit]:
    """Hits with the document's id, title, meta and the window's text."""
    if not found:
        return []
    rows = {
        r.id: r
        for r in session.execute(
            select(
                Document.id, Document.external_id, Document.title, Document.text, Document.meta
            ).where(Document.id.in_([w.doc for w in found]))
        )
    }
    hits = []
    for w in found:
        row = rows.get(w.doc)
        if row is None:
            continue
        text = embedding_input(row.title, row.text)[w.start : w.end]
        meta = row.meta if with_meta else None
        hits.append(
            Hit(
                row.external_id, w.score, w.start, w.end, w.window, row.title, meta, text, with_meta
            )
        )
    return hits
