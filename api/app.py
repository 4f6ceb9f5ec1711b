"""The HTTP API: ``create_app()`` builds it (``uvicorn --factory api.app:create_app``).

Without a broker the API process runs index jobs itself, one at a time in the background;
with one it only writes SQL and queues work for the workers. Job state is always read from
SQL. OpenAPI documentation is served at ``/docs``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from embedq.api import collection_routes, deps, errors, job_routes, metrics, routes, search_routes
from embedq.api.auth import require_key
from embedq.api.background import JobRunner
from embedq.api.gate import KeyGate
from embedq.api.interrupted import fail_interrupted, remove_orphan_uploads
from embedq.api.limits import BodyLimit
from embedq.storage.schema import ensure_ready
from embedq.tasks.callbacks import start_watcher
from embedq.tasks.dispatch import dispatcher_for
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Submit corpora to embed and index, poll jobs, and search collections.

Errors carry a one-line `detail`; a malformed request body is a 422 that lists what is wrong.

With API keys on (`EMBEDQ_API_KEYS=true`), every route but `/healthz` needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`; keys come from `embedq keys create NAME`.
A request body over `EMBEDQ_MAX_BODY_BYTES` is a 413; NDJSON uploads stream to disk instead,
and a record in them over 8 MiB becomes an error of the job.
"""


def prepare_database(rt: Runtime) -> None:
    """Make sure the schema is current before serving; fail what the last stop interrupted."""
    ensure_ready(rt.sessions.kw["bind"])
    fail_interrupted(rt)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    provide = app.dependency_overrides.get(deps.runtime, deps.runtime)
    made = provide()
    rt: Runtime = await made if inspect.isawaitable(made) else made
    await run_in_threadpool(prepare_database, rt)
    runner = JobRunner()
    app.state.runner = runner
    # Made once now, so that the first request does not pay for loading the broker client.
    await run_in_threadpool(dispatcher_for, rt, runner)
    watcher = start_watcher(rt)
    try:
        yield
    finally:
        watcher.stop()
        runner.shutdown()
        # Uploads whose job never started were failed by the runner: remove their files.
        await run_in_threadpool(remove_orphan_uploads, rt)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the database is unavailable, try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


def create_app(max_body_bytes: int | None = None) -> FastAPI:
    """The app; ``max_body_bytes`` defaults to ``EMBEDQ_MAX_BODY_BYTES``."""
    app = FastAPI(
        title="embedq",
        summary="A job queue for text embeddings",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    keyed = [Depends(require_key)]
    app.include_router(routes.health_router)
    app.include_router(routes.router, dependencies=keyed)
    app.include_router(job_routes.router, dependencies=keyed)
    app.include_router(metrics.router, dependencies=keyed)
    app.include_router(collection_routes.router, dependencies=keyed)
    app.include_router(search_routes.router, dependencies=keyed)
    limit = max_body_bytes if max_body_bytes is not None else get_settings().max_body_bytes
    app.add_middleware(BodyLimit, max_bytes=limit)
    app.add_middleware(metrics.RequestMetrics)
    errors.install(app)
    app.add_middleware(KeyGate)  # added last: runs first, before the body limit
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _internal_error)
    return app
