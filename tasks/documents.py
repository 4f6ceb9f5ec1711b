"""Removing a document from a collection."""

from __future__ import annotations

import logging

from embedq.storage.db import transaction
from embedq.storage.documents import delete_document
from embedq.tasks import lookup
from embedq.tasks.dispatch import Dispatcher
from embedq.tasks.errors import NotFound
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)


def remove_document(rt: Runtime, dispatcher: Dispatcher, name: str, external_id: str) -> None:
    """Delete a document and its chunks, then bring the index up to date."""
    with transaction(rt.sessions, write=True) as session:
        coll = lookup.collection(session, name)
        if not delete_document(session, coll.id, external_id):
            raise NotFound(f"no document {external_id!r} in collection {name!r}")
    try:
        dispatcher.catch_up(name)
    except Exception:
        # The deletion is committed and search already leaves the document out; the next
        # catch-up removes its vectors from the index.
        log.exception("catch-up of %s after a deletion failed", name)
