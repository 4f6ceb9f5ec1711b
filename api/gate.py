"""The API-key gate: with ``EMBEDQ_API_KEYS=true`` a request without a live key is answered
401 from its headers alone, before a byte of its body is read.

A pure ASGI middleware, outermost but for Starlette's error handler: FastAPI reads and parses
a JSON body before any dependency runs, so a key check done as a dependency lets anyone make
the server buffer and parse a body up to the size limit (a 60 MB body took 17.5 s and 600 MB
to refuse that way). Here the key is checked first; the body of a refused request is never
received, and the connection is closed after the answer. Routes listed in :data:`OPEN_PATHS`
need no key.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from embedq.api import deps
from embedq.api.auth import CHECKED, INVALID, MISSING, check_key
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
"""Paths served without a key: the health check and the API's own documentation."""


def key_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of ``Authorization: Bearer <key>`` or, failing that, of ``X-API-Key``."""
    bearer = header = None
    for name, value in headers:
        if name == b"authorization" and bearer is None:
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif name == b"x-api-key" and header is None:
            header = value.decode("latin-1").strip() or None
    return bearer or header


class KeyGate:
    """Refuse requests that need a key and carry no live one, before reading their body."""

    def __init__(self, app: ASGIApp, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        rt = await _runtime(scope)
        if rt.settings.api_keys:
            key = key_from_headers(scope.get("headers", []))
            if key is None:
                await _unauthorized(send, MISSING)
                return
            try:
                live = await run_in_threadpool(check_key, rt, key)
            except SQLAlchemyError as exc:
                log.warning("cannot check an API key: %s", exc)
                await _answer(send, 503, "the database is unavailable, try again later")
                return
            if not live:
                await _unauthorized(send, INVALID)
                return
            scope.setdefault("state", {})[CHECKED] = True
        await self.app(scope, receive, send)


async def _runtime(scope: Scope) -> Runtime:
    # The same provider the routes use, tests' overrides included.
    app: Any = scope.get("app")
    overrides = getattr(app, "dependency_overrides", {})
    made = overrides.get(deps.runtime, deps.runtime)()
    rt: Runtime = await made if inspect.isawaitable(made) else made
    return rt


async def _unauthorized(send: Send, detail: str) -> None:
    await _answer(send, 401, detail, [(b"www-authenticate", b"Bearer")])


async def _answer(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
