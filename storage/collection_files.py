"""Removing a collection's folder under the index root (snapshots, and whatever else is
kept per collection there), safely against an index writer that is still writing into it."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path

from embedq.storage.index_store import IndexStore

log = logging.getLogger(__name__)
TRASH_PREFIX = ".trash-"
"""Folders being removed; collection names start with a letter or digit, so never clash."""


def remove_collection_folder(store: IndexStore, name: str) -> bool:
    """Move the collection's folder out of the way in one rename, then delete it.

    A writer busy with the collection keeps writing into the moved folder (open files) or
    finds its path gone; anything it creates under the name afterwards it removes itself once
    it sees the collection gone. Folders left by a deletion that was interrupted are removed
    too. True when there was a folder.
    """
    folder = store.folder(name)
    trash = store.root / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        found = False
    else:
        found = True
    for stale in store.root.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    if trash.exists():
        log.warning("could not remove %s entirely", trash)
    return found


def remove_orphan_folder(store: IndexStore, name: str) -> None:
    """Remove what is under the name of a collection that no longer exists in SQL."""
    folder: Path = store.folder(name)
    shutil.rmtree(folder, ignore_errors=True)
