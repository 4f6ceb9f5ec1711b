"""API keys on the HTTP API: with ``EMBEDQ_API_KEYS=true`` every route but ``/healthz`` needs one.

A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; keys are created with
``embedq keys create NAME``. ``/docs`` and ``/openapi.json`` stay readable without a key: they
describe the public surface only, hold no data, and a browser could not load Swagger UI
otherwise (its page and its schema request carry no key; its "Authorize" button then adds the
key to the calls it makes).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from embedq.api.deps import RuntimeDep
from embedq.storage.db import transaction
from embedq.storage.keys import needs_touch, touch_key, verify_key
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)

CHECKED = "embedq_api_key_checked"
"""Set in the request's state by :class:`embedq.api.gate.KeyGate` once it has let a key through."""

MISSING = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
INVALID = "the API key is not valid (unknown, malformed or revoked)"

_bearer = HTTPBearer(auto_error=False, description="an API key: embedq keys create NAME")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _touch(rt: Runtime, key_id: int) -> None:
    """Record the use; a busy database only delays the record, never the request."""
    try:
        with transaction(rt.sessions, write=True) as session:
            touch_key(session, key_id)
    except SQLAlchemyError as exc:
        log.warning("cannot record the use of API key %s: %s", key_id, exc)


async def require_key(
    request: Request,
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    """Let the request through when keys are off, or when it carries a live key.

    The app's :class:`embedq.api.gate.KeyGate` checks the key before the body is read; this declares
    the schemes in OpenAPI and checks again only where no gate did. ``async`` so that with
    keys off a request skips a trip through the thread pool."""
    if not rt.settings.api_keys or request.scope.get("state", {}).get(CHECKED):
        return
    key = bearer.credentials if bearer is not None else header
    if not key:
        raise _unauthorized(MISSING)
    if not await run_in_threadpool(check_key, rt, key):
        raise _unauthorized(INVALID)


def check_key(rt: Runtime, key: str) -> bool:
    """True for a live key; its use is recorded (at most once a minute)."""
    with rt.sessions() as session:
        row = verify_key(session, key)
    if row is None:
        return False
    if needs_touch(row):
        _touch(rt, row.id)
    return True
