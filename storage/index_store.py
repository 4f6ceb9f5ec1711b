"""FAISS snapshots on disk: one folder per collection, published atomically.

A snapshot is an immutable ``index-<watermark>-<token>.faiss`` file plus ``current.json``,
the commit point, which names the file and records its checksum, the model and dimension it
was built for and the watermark (the last sequence number it contains). Publishing writes a
new file, fsyncs it, then atomically replaces ``current.json``; a crash at any moment leaves
the previous snapshot readable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from storage.files import fsync_dir

log = logging.getLogger(__name__)
CURRENT = "current.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SnapshotError(Exception):
    """A snapshot that is missing, damaged or built for something else."""


def check_collection_name(name: str) -> str:
    """Refuse names that could escape the data folder or confuse the filesystem."""
    if not _NAME_RE.fullmatch(name) or name in (".", "..") or ".." in name:
        raise ValueError(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    file: str
    sha256: str
    model: str
    dim: int
    metric: str
    factory: str
    watermark: int
    count: int
    created: str


def new_index(dim: int, factory: str = "Flat") -> faiss.Index:
    """An empty ID-mapped inner-product index (vectors are L2-normalised: cosine)."""
    spec = factory if factory.startswith("IDMap") else f"IDMap2,{factory}"
    return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_durably(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class IndexStore:
    """Reads and publishes the snapshots of every collection under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, collection: str) -> Path:
        return self.root / check_collection_name(collection)

    def meta(self, collection: str) -> SnapshotMeta | None:
        """The published snapshot's metadata, or None when there is none or it is unreadable."""
        path = self.folder(collection) / CURRENT
        try:
            return SnapshotMeta(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("unreadable %s: %s", path, exc)
            return None

    def load(self, collection: str, *, model: str, dim: int) -> tuple[faiss.Index, SnapshotMeta]:
        """Load and verify the published snapshot; SnapshotError says why it cannot be used."""
        meta = self.meta(collection)
        if meta is None:
            raise SnapshotError(f"no snapshot for collection {collection!r}")
        if meta.model != model or meta.dim != dim:
            raise SnapshotError(
                f"snapshot of {collection!r} was built for {meta.model} ({meta.dim} dims), "
                f"not {model} ({dim} dims)"
            )
        path = self.folder(collection) / meta.file
        try:
            actual = _sha256(path)
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {path} is missing") from exc
        if actual != meta.sha256:
            raise SnapshotError(f"snapshot file {path} is damaged (checksum mismatch)")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise SnapshotError(f"snapshot file {path} cannot be read: {exc}") from exc
        if index.d != dim or index.ntotal != meta.count:
            raise SnapshotError(f"snapshot file {path} does not match its metadata")
        return index, meta

    def publish(
        self, collection: str, index: faiss.Index, *, model: str, factory: str, watermark: int
    ) -> SnapshotMeta:
        """Write ``index`` as the collection's new snapshot, atomically and durably."""
        folder = self.folder(collection)
        folder.mkdir(parents=True, exist_ok=True)
        previous = self.meta(collection)
        data: np.ndarray = faiss.serialize_index(index)
        name = f"index-{watermark}-{secrets.token_hex(4)}.faiss"
        _write_durably(folder / name, data.data)
        meta = SnapshotMeta(
            file=name,
            sha256=hashlib.sha256(data.data).hexdigest(),
            model=model,
            dim=index.d,
            metric="cosine",
            factory=factory,
            watermark=watermark,
            count=int(index.ntotal),
            created=datetime.now(UTC).isoformat(),
        )
        _write_durably(folder / CURRENT, json.dumps(asdict(meta), indent=1).encode())
        fsync_dir(folder)
        # Keep the previous file too: a reader may have just read the old current.json.
        self._remove_stale(folder, keep={name, previous.file if previous else name})
        return meta

    def drop_snapshot(self, collection: str) -> None:
        """Remove the published snapshot (the next catch-up rebuilds it from SQL)."""
        folder = self.folder(collection)
        (folder / CURRENT).unlink(missing_ok=True)
        for path in folder.glob("index-*.faiss*"):
            path.unlink(missing_ok=True)

    @staticmethod
    def _remove_stale(folder: Path, keep: set[str]) -> None:
        for path in folder.glob("index-*.faiss*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


class SnapshotCache:
    """Per-process cache of loaded snapshots, reloaded when a newer one is published."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, faiss.Index, SnapshotMeta]] = {}

    def get(self, collection: str, *, model: str, dim: int) -> tuple[Any, SnapshotMeta] | None:
        """The newest usable snapshot, or None (search then reads everything from SQL)."""
        meta = self.store.meta(collection)
        if meta is None:
            return None
        with self._lock:
            cached = self._cache.get(collection)
            if cached and cached[0] == meta.file:
                return cached[1], cached[2]
            try:
                index, meta = self.store.load(collection, model=model, dim=dim)
            except SnapshotError as exc:
                log.warning("ignoring snapshot: %s", exc)
                return None
            self._cache[collection] = (meta.file, index, meta)
            return index, meta
