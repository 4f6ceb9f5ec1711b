"""Routes: health, collections, documents, uploads and search.

Blocking work (SQL, model loading, encoding) runs in plain ``def`` routes, which FastAPI
runs in its thread pool, or explicitly off the event loop in the one streaming route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from embedq.api.bodies import CheckedRoute
from embedq.api.callback_params import CallbackQuery, checked_callback_url, with_callback
from embedq.api.deps import DispatcherDep, NameParam, RuntimeDep
from embedq.api.limits import MAX_RECORD_BYTES, RecordLimit, check_upload_size
from embedq.api.schemas import (
    CollectionCreate,
    CollectionView,
    DocumentsSubmit,
    Health,
    JobAccepted,
    Problem,
)
from embedq.tasks import collection_setup, documents, lookup, uploads
from embedq.tasks.collection_setup import CollectionSpec
from embedq.tasks.runtime import Runtime

router = APIRouter(route_class=CheckedRoute)
health_router = APIRouter()
"""Routes that answer without an API key."""

NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json-lines",
    }
)
WRITE_BYTES = 1 << 20
"""Upload bytes gathered before one write to disk."""
SNIFF_BYTES = 8192
"""An upload with a NUL byte among its first bytes is binary, not NDJSON."""

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


def accepted(response: Response, job_id: str) -> JobAccepted:
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(job_id=job_id)


@health_router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses={503: {"description": "the database cannot be reached"}},
)
def healthz(rt: RuntimeDep) -> Health | JSONResponse:
    """The API is up and its database answers."""
    try:
        with rt.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = f"unreachable: {type(exc).__name__}"
        return JSONResponse(
            {"status": "unavailable", "database": reason, "detail": f"database {reason}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return Health(status="ok", database="ok")


@router.post(
    "/v1/collections",
    response_model=CollectionView,
    status_code=status.HTTP_201_CREATED,
    tags=["collections"],
    responses={
        200: {"model": CollectionView, "description": "already exists with these settings"},
        409: {"model": Problem, "description": "exists with other settings"},
    },
)
def create_collection(body: CollectionCreate, rt: RuntimeDep, response: Response) -> CollectionView:
    """Create a collection; asking again with the same settings returns it (200)."""
    spec = CollectionSpec(body.name, body.model, body.chunk_tokens, body.overlap)
    if body.index is not None:
        spec = CollectionSpec(body.name, body.model, body.chunk_tokens, body.overlap, body.index)
    coll, created = collection_setup.create_collection(rt, spec, index=body.index is not None)
    if not created:
        response.status_code = status.HTTP_200_OK
    return CollectionView.model_validate(collection_setup.summary(rt, coll))


@router.get(
    "/v1/collections/{name}",
    response_model=CollectionView,
    tags=["collections"],
    responses=NOT_FOUND,
)
def get_collection(name: NameParam, rt: RuntimeDep) -> CollectionView:
    """Settings and sizes: stored documents and chunks, and vectors in the published index."""
    with rt.sessions() as session:
        coll = lookup.collection(session, name)
    return CollectionView.model_validate(collection_setup.summary(rt, coll))


@router.post(
    "/v1/collections/{name}/documents",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["documents"],
    responses={**NOT_FOUND, 413: {"model": Problem}},
)
def add_documents(
    name: NameParam,
    body: DocumentsSubmit,
    rt: RuntimeDep,
    dispatcher: DispatcherDep,
    response: Response,
) -> JobAccepted:
    """Index documents (insert, replace changed ones, skip unchanged ones) as a job; the
    answer comes once they are stored, before any is embedded."""
    callback_url = checked_callback_url(body.callback_url, ("body", "callback_url"))
    job_id = uploads.submit_records(rt, dispatcher, name, body.documents)
    return accepted(response, with_callback(rt, job_id, callback_url))


@router.post(
    "/v1/collections/{name}/uploads",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["documents"],
    responses={**NOT_FOUND, 415: {"model": Problem}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "one JSON document per line: {id, text, title?, meta?}",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_documents(
    name: NameParam,
    request: Request,
    rt: RuntimeDep,
    dispatcher: DispatcherDep,
    response: Response,
    callback_url: CallbackQuery = None,
) -> JobAccepted:
    """Index an NDJSON corpus of any size; it is streamed to disk, then read line by line."""
    callback_url = checked_callback_url(callback_url, ("query", "callback_url"))
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in NDJSON_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the corpus as application/x-ndjson, not {media or 'no content type'}",
        )
    check_upload_size(request.scope, 0, rt.settings.max_upload_bytes)
    job_id, path = await run_in_threadpool(uploads.start_upload, rt, name)
    limit = RecordLimit(MAX_RECORD_BYTES)
    await _receive(request, rt, job_id, path, limit)
    errors = [big.error(str(path), limit.max_bytes) for big in limit.oversized]
    await run_in_threadpool(uploads.ingest_upload, rt, dispatcher, job_id, path, errors)
    await run_in_threadpool(with_callback, rt, job_id, callback_url)
    return accepted(response, job_id)


async def _receive(
    request: Request, rt: Runtime, job_id: str, path: Path, limit: RecordLimit
) -> None:
    """Write the request body to ``path`` as it arrives; a failed upload fails the job.

    Records over the size limit are left out as they stream (see ``RecordLimit``).
    """
    try:
        with path.open("wb") as fh:
            pending = bytearray()
            head = bytearray()
            received = 0
            async for part in request.stream():
                received += len(part)
                check_upload_size(request.scope, received, rt.settings.max_upload_bytes)
                if len(head) < SNIFF_BYTES:
                    head += part[: SNIFF_BYTES - len(head)]
                    _check_text(head)
                pending += limit.feed(part)
                if len(pending) >= WRITE_BYTES:
                    await run_in_threadpool(fh.write, pending)
                    pending = bytearray()
            pending += limit.close()
            await run_in_threadpool(fh.write, pending)
    except HTTPException as exc:
        await run_in_threadpool(uploads.abandon_upload, rt, job_id, path, str(exc.detail))
        raise
    except ClientDisconnect as exc:
        await run_in_threadpool(uploads.abandon_upload, rt, job_id, path, "the upload was cut off")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload was cut off") from exc
    except OSError as exc:
        reason = f"cannot store the upload: {exc.strerror or exc}"
        await run_in_threadpool(uploads.abandon_upload, rt, job_id, path, reason)
        raise HTTPException(status.HTTP_507_INSUFFICIENT_STORAGE, reason) from exc


def _check_text(head: bytes | bytearray) -> None:
    if b"\0" in head:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "the upload is binary data, not NDJSON text (one JSON document per line)",
        )


@router.delete(
    "/v1/collections/{name}/documents/{doc_id:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["documents"],
    responses=NOT_FOUND,
)
def delete_document(
    name: NameParam, doc_id: str, rt: RuntimeDep, dispatcher: DispatcherDep
) -> Response:
    """Remove a document and its vectors (ids may contain slashes)."""
    documents.remove_document(rt, dispatcher, name, doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
