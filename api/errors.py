"""The one table from the project's errors to HTTP statuses and CLI exit codes.

Use cases raise ``embedq.tasks.errors`` kinds (lower-layer errors are translated there); the HTTP
app renders them as ``{"detail": message}`` with the status below, the CLI prints
``embedq: error: message`` and exits with the code below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedq.tasks.errors import (
    LOWER,
    BadInput,
    Conflict,
    EmbedqError,
    NotFound,
    TooLarge,
    Unavailable,
    translate,
)

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

USER_ERROR_EXIT = 2
"""Exit code of a command that failed for a reason its user can fix."""

TABLE: dict[type[EmbedqError], tuple[int, int]] = {
    NotFound: (404, USER_ERROR_EXIT),
    BadInput: (422, USER_ERROR_EXIT),
    Conflict: (409, USER_ERROR_EXIT),
    TooLarge: (413, USER_ERROR_EXIT),
    Unavailable: (503, USER_ERROR_EXIT),
    EmbedqError: (422, USER_ERROR_EXIT),
}
"""(HTTP status, exit code) by kind; the nearest kind in an error's ancestry wins."""


def _codes(exc: EmbedqError) -> tuple[int, int]:
    for kind in type(exc).__mro__:
        codes = TABLE.get(kind)
        if codes is not None:
            return codes
    return TABLE[EmbedqError]


def http_status(exc: EmbedqError) -> int:
    return _codes(exc)[0]


def exit_code(exc: EmbedqError) -> int:
    return _codes(exc)[1]


async def _render(request: Request, exc: Exception) -> JSONResponse:
    from fastapi.responses import JSONResponse

    known = translate(exc)
    assert known is not None  # registered only for the kinds translate() knows
    return JSONResponse({"detail": str(known)}, status_code=http_status(known))


def install(app: FastAPI) -> None:
    """Render the project's errors (and the lower layers' known ones) as their status."""
    app.add_exception_handler(EmbedqError, _render)
    for lower, _kind in LOWER:
        app.add_exception_handler(lower, _render)
