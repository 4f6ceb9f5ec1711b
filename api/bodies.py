"""JSON request bodies are read strictly: UTF-8, finite numbers, no lone surrogates.

``json.loads`` turns an escape such as ``"\\ud800"`` into a string that no database, tokenizer
or file can take; caught here, it is a 422 like any other malformed body instead of a failure
deep inside a job. A number too large for a float (``1e400``) or ``NaN``/``Infinity`` is refused
too: it would otherwise come back in a validation error that cannot be written as JSON.
Routers use :class:`CheckedRoute` as their ``route_class``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from embedq.storage.readers import lone_surrogate


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _no_constant(name: str) -> float:
    raise _NotFinite(name)


def _parse(text: str) -> Any:
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except _NotFinite as exc:
        number = str(exc)
        raise json.JSONDecodeError(
            f"number {number[:40]} is not a finite float", text, max(text.find(number), 0)
        ) from exc


class CheckedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = body[: exc.start + 1].decode("utf-8", errors="replace")
                raise json.JSONDecodeError("invalid UTF-8", shown, exc.start) from exc
            value = _parse(text)
            bad = lone_surrogate(value)
            if bad is not None:
                where = text.find("\\u")
                raise json.JSONDecodeError(
                    "a string holds a lone surrogate escape (not valid Unicode)",
                    text,
                    max(where, 0),
                )
            self._json = value
        return self._json


class CheckedRoute(APIRoute):
    """A route whose JSON body is read by :class:`CheckedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(CheckedRequest(request.scope, request.receive))

        return checked
