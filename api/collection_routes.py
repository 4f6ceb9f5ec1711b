"""Routes that list collections and jobs, and delete a collection. Errors are the
project's kinds (``embedq.tasks.errors``), rendered by ``embedq.api.errors``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from embedq.api.bodies import CheckedRoute
from embedq.api.deps import NameParam, RuntimeDep
from embedq.api.listing_schemas import CollectionDeleted, CollectionList, JobList
from embedq.api.routes import NOT_FOUND
from embedq.api.schemas import NAME_PATTERN, Problem
from embedq.tasks import collections, joblist

router = APIRouter(route_class=CheckedRoute)
BAD_QUERY: dict[int | str, dict[str, object]] = {
    422: {"model": Problem, "description": "a bad cursor, status or limit"}
}
Cursor = Annotated[str | None, Query(max_length=512, description="the `next` of the previous page")]


@router.get(
    "/v1/collections", response_model=CollectionList, tags=["collections"], responses=BAD_QUERY
)
def list_collections(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=collections.MAX_LIMIT)] = 100,
    cursor: Cursor = None,
) -> CollectionList:
    """Collections by name, a page at a time, each with its settings and sizes."""
    page = collections.list_collections(rt, limit=limit, cursor=cursor)
    return CollectionList.model_validate(page)


@router.delete(
    "/v1/collections/{name}",
    response_model=CollectionDeleted,
    tags=["collections"],
    responses=NOT_FOUND,
)
def delete_collection(name: NameParam, rt: RuntimeDep) -> CollectionDeleted:
    """Delete a collection: documents, vectors, index files; its queued or running jobs are
    cancelled. The name can be used again at once."""
    deleted = collections.delete_collection(rt, name)
    return CollectionDeleted.model_validate(deleted.as_dict())


@router.get("/v1/jobs", response_model=JobList, tags=["jobs"], responses=BAD_QUERY)
def list_jobs(
    rt: RuntimeDep,
    status_: Annotated[
        str | None,
        Query(
            alias="status",
            max_length=128,
            description="queued, running, succeeded, failed, cancelled; several with commas",
        ),
    ] = None,
    collection: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)] = None,
    kind: Annotated[
        str | None,
        Query(
            max_length=256,
            pattern=r"^[A-Za-z0-9_,-]+$",
            description="job kind; several with commas",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=joblist.MAX_LIMIT)] = 50,
    cursor: Cursor = None,
) -> JobList:
    """Jobs, newest first, a page at a time; `next` is the cursor of the following page."""
    page = joblist.list_jobs(
        rt, status=status_, collection=collection, kind=kind, limit=limit, cursor=cursor
    )
    return JobList.model_validate(page)
