"""The project's errors: one root and a few kinds that a front door maps to an HTTP status
or an exit code (``api/errors.py`` holds that table).

Use cases under ``tasks/`` raise these. ``workers/`` and ``storage/`` import nothing of the
project, so they keep their own few exceptions (``ModelError``, ``CorpusError``,
``SchemaNotReady``...); :func:`translate` turns those into the kinds below, so an adapter
handles a single hierarchy. A message is one line a user can act on.
"""

from __future__ import annotations

from embedq.storage.readers import CorpusError
from embedq.storage.schema import SchemaNotReady
from embedq.workers.models import ModelError


class EmbedqError(Exception):
    """Something the caller can fix or retry; ``str()`` says what, in one line."""


class NotFound(EmbedqError, LookupError):
    """A named collection, document or job does not exist."""


class BadInput(EmbedqError, ValueError):
    """A request that cannot be carried out as asked (a bad name, model, file, option)."""


class Conflict(EmbedqError):
    """The request contradicts what exists (other collection settings, a finished job)."""


class TooLarge(EmbedqError):
    """More than one request may carry; the message says what to do instead."""


class Unavailable(EmbedqError):
    """A service the request needs (database, broker) cannot be used right now."""


LOWER: tuple[tuple[type[Exception], type[EmbedqError]], ...] = (
    (ModelError, BadInput),
    (CorpusError, BadInput),
    (SchemaNotReady, Unavailable),
)
"""Errors of the lower layers and the kind each one is."""


def translate(exc: BaseException) -> EmbedqError | None:
    """``exc`` as one of the project's kinds, or None when it is not a known user error."""
    if isinstance(exc, EmbedqError):
        return exc
    for lower, kind in LOWER:
        if isinstance(exc, lower):
            return kind(str(exc))
    return None
