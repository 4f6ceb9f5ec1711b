"""Routes: search (one query or a batch), read one document, rebuild a collection's index."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, status

from embedq.api.bodies import CheckedRoute
from embedq.api.deps import NameParam, RuntimeDep
from embedq.api.metrics import observe_search
from embedq.api.schemas import Problem
from embedq.api.search_schemas import (
    BatchSearchResponse,
    DocumentView,
    ReindexRequest,
    ReindexResult,
    SearchRequest,
    SearchResponse,
)
from embedq.storage.documents import read_document
from embedq.storage.models import Collection
from embedq.tasks import lookup
from embedq.tasks.reindex import ReindexError, reindex
from embedq.tasks.runtime import Runtime
from embedq.tasks.search import SearchError, SearchOptions, search

router = APIRouter(route_class=CheckedRoute)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


def _collection(rt: Runtime, name: str) -> Collection:
    """The named collection (NotFound, a 404, when there is none)."""
    with rt.sessions() as session:
        return lookup.collection(session, name)


@router.post(
    "/v1/collections/{name}/search",
    response_model=SearchResponse | BatchSearchResponse,
    tags=["search"],
    responses={**NOT_FOUND, 422: {"model": Problem, "description": "bad filter or options"}},
)
def search_collection(
    name: NameParam, body: SearchRequest, rt: RuntimeDep
) -> SearchResponse | BatchSearchResponse:
    """The ``k`` best documents per query, each with its best matching window and its text.

    ``query`` gives ``{"hits": [...]}``; ``queries`` gives ``{"results": [{"hits": [...]}]}``
    in the order of the queries."""
    options = SearchOptions(
        mode=body.mode,
        filter=body.filter,
        fusion=body.fusion,
        alpha=body.alpha,
        rrf_k=body.rrf_k,
        candidates=body.candidates,
        nprobe=body.nprobe,
        ef_search=body.ef_search,
        meta=body.meta,
    )
    texts = body.queries if body.queries is not None else [body.query or ""]
    _collection(rt, name)
    started = time.perf_counter()
    try:
        results = search(rt, name, texts, body.k, options)
    except SearchError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    observe_search(body.mode, time.perf_counter() - started)
    views = [
        SearchResponse.model_validate({"hits": [hit.as_dict() for hit in hits]}) for hits in results
    ]
    if body.queries is None:
        return views[0]
    return BatchSearchResponse(results=views)


@router.get(
    "/v1/collections/{name}/documents/{doc_id:path}",
    response_model=DocumentView,
    tags=["documents"],
    responses=NOT_FOUND,
)
def get_document(name: NameParam, doc_id: str, rt: RuntimeDep) -> DocumentView:
    """A stored document: its text, title and meta (ids may contain slashes)."""
    coll = _collection(rt, name)
    with rt.sessions() as session:
        doc = read_document(session, coll.id, doc_id)
    if doc is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no document {doc_id!r} in collection {name!r}"
        )
    return DocumentView(
        id=doc.id,
        title=doc.title,
        text=doc.text,
        meta=doc.meta,
        chunks=doc.chunks,
        indexed=doc.indexed,
    )


@router.post(
    "/v1/collections/{name}/reindex",
    response_model=ReindexResult,
    tags=["collections"],
    responses={**NOT_FOUND, 422: {"model": Problem, "description": "unusable index type"}},
)
def reindex_collection(name: NameParam, body: ReindexRequest, rt: RuntimeDep) -> ReindexResult:
    """Rebuild the collection's FAISS index as another type from its stored vectors (no
    embedding); answers when the new index is published."""
    _collection(rt, name)
    try:
        done = reindex(rt, name, body.index)
    except ReindexError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return ReindexResult.model_validate(done.as_dict())
