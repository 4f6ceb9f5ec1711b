"""API keys: create, verify, list and revoke.

A key reads ``eq_<prefix>_<secret>``. The prefix is public: it finds the row and names the
key in listings. Only the SHA-256 of the secret is stored, and it is compared in constant
time, so the database never holds a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from embedq.storage.models import ApiKey, utcnow

KEY_SCHEME = "eq"
PREFIX_BYTES = 6
"""Random bytes of the public prefix (12 hex characters)."""
SECRET_BYTES = 32
TOUCH_EVERY = timedelta(seconds=60)
"""``last_used_at`` is written at most this often per key, not on every request."""

_UNKNOWN = hashlib.sha256(b"no such key").hexdigest()


class UnknownKey(LookupError):
    """No key matches what was asked."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; they were stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def parse_key(key: str) -> tuple[str, str] | None:
    """The ``(prefix, secret)`` of a well-formed key, else None."""
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_key(session: Session, name: str) -> tuple[int, str]:
    """Store a new key named ``name``; returns its id and the key, which is shown only once."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("a key name needs 1 to 128 characters")
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    row = ApiKey(name=name, prefix=prefix, secret_hash=_digest(secret), created_at=utcnow())
    session.add(row)
    session.flush()
    return row.id, f"{KEY_SCHEME}_{prefix}_{secret}"


def verify_key(session: Session, key: str) -> ApiKey | None:
    """The live key row that ``key`` belongs to, or None (unknown, malformed or revoked)."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    prefix, secret = parsed
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    expected = row.secret_hash if row is not None else _UNKNOWN
    matches = hmac.compare_digest(_digest(secret), expected)
    if row is None or not matches or row.revoked_at is not None:
        return None
    return row


def needs_touch(row: ApiKey, now: datetime | None = None) -> bool:
    """Whether ``last_used_at`` is older than ``TOUCH_EVERY`` (or unset)."""
    last = _aware(row.last_used_at)
    return last is None or (now or utcnow()) - last >= TOUCH_EVERY


def touch_key(session: Session, key_id: int) -> None:
    """Record a use of the key now."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def key_view(row: ApiKey) -> dict[str, Any]:
    """A key as listings show it: never its secret or hash."""

    def iso(value: datetime | None) -> str | None:
        aware = _aware(value)
        return aware.isoformat() if aware is not None else None

    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "revoked_at": iso(row.revoked_at),
    }


def list_keys(session: Session) -> list[dict[str, Any]]:
    """Every key, oldest first, revoked ones included."""
    return [key_view(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def find_key(session: Session, ref: str) -> ApiKey:
    """The key named by its prefix, its numeric id or the whole key."""
    ref = ref.strip()
    parsed = parse_key(ref)
    prefix = parsed[0] if parsed else ref
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None and ref.isdigit():
        row = session.get(ApiKey, int(ref))
    if row is None:
        raise UnknownKey(f"no API key {ref!r} (give its id or prefix: embedq keys list)")
    return row


def revoke_key(session: Session, ref: str) -> tuple[ApiKey, bool]:
    """Revoke a key; returns it and whether it was revoked now (False: already revoked)."""
    row = find_key(session, ref)
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    session.flush()
    return row, True
