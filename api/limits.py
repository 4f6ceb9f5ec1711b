"""Size limits on what the API reads.

- :class:`BodyLimit`, an ASGI middleware: a request body larger than ``max_bytes`` is answered
  with 413, whether its ``Content-Length`` says so up front or a chunked body grows past the
  limit while it streams. Nothing is buffered: bytes are counted as the app receives them.
  Routes that stream their body to disk (NDJSON uploads) are exempt; they bound each record
  instead.
- :class:`RecordLimit`: cuts NDJSON records longer than ``MAX_RECORD_BYTES`` out of an upload
  as it streams, leaving an empty line in their place so that every other line keeps its
  number; each one cut becomes an error of the job that names its line (and its id when the
  record starts with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException as FastAPIHTTPException
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedq.tasks.uploads import MAX_RECORD_BYTES

UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/uploads/?$")


def is_upload(path: str) -> bool:
    return UPLOAD_PATH.match(path) is not None


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; FastAPI renders it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes; send large corpora as NDJSON "
            "to /v1/collections/{name}/uploads",
        )


class UploadTooLarge(FastAPIHTTPException):
    """An NDJSON upload over ``EMBEDQ_MAX_UPLOAD_BYTES``, declared or streamed (FastAPI's
    exception class, which the upload route catches to remove the partial file)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the upload is larger than {limit} bytes (EMBEDQ_MAX_UPLOAD_BYTES); "
            "split the corpus into several uploads",
        )


def check_upload_size(scope: Scope, received: int, limit: int) -> None:
    """Raise :class:`UploadTooLarge` once an upload declares or has sent more than ``limit``."""
    declared = _content_length(scope) or 0
    if max(declared, received) > limit:
        raise UploadTooLarge(limit)


class BodyLimit:
    """Answer 413 to request bodies over ``max_bytes``, except on paths ``exempt`` accepts."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: Callable[[str], bool] = is_upload
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, BodyTooLarge(self.max_bytes))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, exc: BodyTooLarge) -> None:
    body = json.dumps({"detail": exc.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ NDJSON records

_ID_HEAD = 64 * 1024
_LEADING_ID = re.compile(rb'^\s*\{\s*"_?id"\s*:\s*("(?:[^"\\]|\\.){1,1024}"|-?\d{1,30})')


@dataclass(frozen=True, slots=True)
class Oversized:
    line: int
    size: int
    id: str | None

    def error(self, source: str, limit: int) -> dict[str, object]:
        return {
            "line": self.line,
            "id": self.id,
            "reason": f"record too large ({self.size} bytes; at most {limit})",
            "source": source,
        }


def _leading_id(head: bytes) -> str | None:
    match = _LEADING_ID.match(head)
    if match is None:
        return None
    try:
        value = json.loads(match[1])
    except ValueError:
        return None
    return str(value) if str(value).strip() else None


class RecordLimit:
    """Pass NDJSON bytes through, replacing each line over ``max_bytes`` by an empty line.

    Holds at most one line (up to the limit) in memory; lines are numbered from 1 as the
    corpus readers number them.
    """

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self.max_bytes = max_bytes
        self.oversized: list[Oversized] = []
        self._line = 1
        self._size = 0
        self._held = bytearray()
        self._head: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        """The bytes to store for ``data``: complete lines only."""
        *complete, rest = data.split(b"\n")
        out = bytearray()
        for part in complete:
            self._take(part)
            out += self._end_line()
            out += b"\n"
        self._take(rest)
        return bytes(out)

    def close(self) -> bytes:
        """The bytes of a last line that has no newline."""
        if not self._size:
            return b""
        return self._end_line()

    def _take(self, part: bytes) -> None:
        self._size += len(part)
        if self._head is not None:
            return
        self._held += part
        if self._size > self.max_bytes:
            self._head = bytes(self._held[:_ID_HEAD])
            self._held = bytearray()

    def _end_line(self) -> bytes:
        if self._head is not None:
            self.oversized.append(Oversized(self._line, self._size, _leading_id(self._head)))
            out = b""
        else:
            out = bytes(self._held)
        self._line += 1
        self._size = 0
        self._held = bytearray()
        self._head = None
        return out
