"""Opaque page cursors: a position in a listing, encoded so that clients pass it back as is."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from embedq.tasks.errors import BadInput


class BadCursor(BadInput):
    """A cursor that this listing did not hand out (or that was altered)."""


def encode_cursor(kind: str, position: list[Any]) -> str:
    """A URL-safe token for ``position`` in the listing ``kind``."""
    raw = json.dumps([kind, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, token: str, size: int) -> list[Any]:
    """The position a cursor of listing ``kind`` holds (``size`` values); BadCursor if not."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor(f"invalid cursor {token[:40]!r}: pass back a 'next' value as is") from exc
    if not isinstance(value, list) or len(value) != size + 1 or value[0] != kind:
        raise BadCursor(f"invalid cursor {token[:40]!r}: it is not a cursor of {kind}")
    return value[1:]
