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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedq.storage.files import fsync_dir

if TYPE_CHECKING:
    import faiss  # imported where used: commands that only queue work never load it

log = logging.getLogger(__name__)
CURRENT = "current.json"
PENDING = "pending.json"
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
    size: int = 0  # bytes of the file; 0 in snapshots written before it was recorded


def new_index(dim: int, factory: str = "Flat") -> faiss.Index:
    """An empty ID-mapped inner-product index (vectors are L2-normalised: cosine)."""
    import faiss

    spec = factory if factory.startswith("IDMap") else f"IDMap2,{factory}"
    return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_durably(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, fsync it, then rename it into place: a
    crash leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb+") as fh:
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
        import faiss

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
        import faiss

        folder = self.folder(collection)
        folder.mkdir(parents=True, exist_ok=True)
        previous = self.meta(collection)
        name = f"index-{watermark}-{secrets.token_hex(4)}.faiss"
        # Written straight to the file: no second copy of the index in memory.
        _write_durably(folder / name, lambda tmp: faiss.write_index(index, str(tmp)))
        meta = SnapshotMeta(
            file=name,
            sha256=_sha256(folder / name),
            model=model,
            dim=index.d,
            metric="cosine",
            factory=factory,
            watermark=watermark,
            count=int(index.ntotal),
            created=datetime.now(UTC).isoformat(),
            size=(folder / name).stat().st_size,
        )
        current = json.dumps(asdict(meta), indent=1).encode()
        _write_durably(folder / CURRENT, lambda tmp: tmp.write_bytes(current))
        fsync_dir(folder)
        (folder / PENDING).unlink(missing_ok=True)
        # Keep the previous file too: a reader may have just read the old current.json.
        self._remove_stale(folder, keep={name, previous.file if previous else name})
        return meta

    def looks_usable(self, collection: str, meta: SnapshotMeta, *, model: str, dim: int) -> bool:
        """Cheap checks of a snapshot without reading it: built for this model, file there
        and of the recorded size. ``load`` verifies it fully."""
        if meta.model != model or meta.dim != dim:
            return False
        try:
            size = (self.folder(collection) / meta.file).stat().st_size
        except OSError:
            return False
        return not meta.size or size == meta.size

    def mark_pending(self, collection: str, watermark: int) -> datetime:
        """Note (once) that changes above the snapshot at ``watermark`` wait to be published;
        returns when that was first noted."""
        since = self.pending_since(collection, watermark)
        if since is not None:
            return since
        since = datetime.now(UTC)
        record = {"watermark": watermark, "since": since.isoformat()}
        data = json.dumps(record).encode()
        _write_durably(self.folder(collection) / PENDING, lambda tmp: tmp.write_bytes(data))
        return since

    def pending_since(self, collection: str, watermark: int) -> datetime | None:
        """When changes above the snapshot at ``watermark`` were first noted, if they were."""
        try:
            record = json.loads((self.folder(collection) / PENDING).read_text())
            if record["watermark"] != watermark:
                return None
            return datetime.fromisoformat(record["since"])
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable %s of %s: %s", PENDING, collection, exc)
            return None

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


class Tail:
    """The rows a snapshot does not hold yet (ids above a floor), grown in place.

    ``read`` fetches only rows above the last one it holds, so a reader pays for new rows
    only. The arrays grow by doubling and are never changed below the rows already handed
    out, so views returned earlier stay valid while other threads extend the tail.
    """

    def __init__(self, key: int, dim: int, floor: int) -> None:
        self.key = key
        self.dim = dim
        self.floor = floor
        self.last = floor
        self.seen = floor
        self.n = 0
        self._ids = np.empty(0, dtype=np.int64)
        self._vecs = np.empty((0, dim), dtype=np.float32)
        self.lock = threading.Lock()

    def read(
        self,
        floor: int,
        fetch: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]],
        upto: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows above ``floor``: those held, plus what ``fetch(last_id)`` yields (ids
        ascending, every row above ``last_id`` committed so far). Returns (ids, vectors).

        ``upto``: the highest id the collection has allocated, read before calling (ids are
        allocated and committed in order). When the tail has already read that far, ``fetch``
        is not called: a search on an unchanged collection costs no SQL for its tail.
        """
        with self.lock:
            self._rebase(floor)
            if upto is None or upto > self.seen:
                for ids, vecs in fetch(self.last):
                    self._append(ids, vecs)
                self.seen = max(self.seen, upto or 0)
            return self._ids[: self.n], self._vecs[: self.n]

    def _append(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids):
            return
        need = self.n + len(ids)
        if need > len(self._ids):
            size = max(need, 2 * len(self._ids), 1024)
            grown_ids = np.empty(size, dtype=np.int64)
            grown_vecs = np.empty((size, self.dim), dtype=np.float32)
            grown_ids[: self.n] = self._ids[: self.n]
            grown_vecs[: self.n] = self._vecs[: self.n]
            self._ids, self._vecs = grown_ids, grown_vecs
        self._ids[self.n : need] = ids
        self._vecs[self.n : need] = vecs
        self.n = need
        self.last = int(ids[-1])

    def _rebase(self, floor: int) -> None:
        """Keep only rows above ``floor`` (a newer snapshot holds the rest); a lower floor
        (an older snapshot) starts over. New arrays: views handed out are not touched."""
        if floor == self.floor:
            return
        if floor < self.floor:
            self.floor = self.last = self.seen = floor
            self.n = 0
            self._ids = np.empty(0, dtype=np.int64)
            self._vecs = np.empty((0, self.dim), dtype=np.float32)
            return
        keep = self._ids[: self.n] > floor
        self._ids = self._ids[: self.n][keep]
        self._vecs = self._vecs[: self.n][keep]
        self.n = len(self._ids)
        self.floor = floor
        self.last = max(self.last, floor)
        self.seen = max(self.seen, floor)


class SnapshotCache:
    """Per-process cache of loaded snapshots, reloaded when a newer one is published, and of
    each collection's tail of rows above its snapshot."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, faiss.Index, SnapshotMeta]] = {}
        self._tails: dict[str, Tail] = {}

    def tail(self, collection: str, *, key: int, dim: int, floor: int) -> Tail:
        """The collection's tail (read it with ``Tail.read``). ``key`` identifies the
        collection: one dropped and created again under its name gets a new tail."""
        with self._lock:
            tail = self._tails.get(collection)
            if tail is None or tail.key != key or tail.dim != dim:
                tail = self._tails[collection] = Tail(key, dim, floor)
            return tail

    def forget(self, collection: str) -> None:
        """Drop what is cached for a collection (it was deleted)."""
        with self._lock:
            self._cache.pop(collection, None)
            self._tails.pop(collection, None)

    def get(self, collection: str, *, model: str, dim: int) -> tuple[Any, SnapshotMeta] | None:
        """The newest usable snapshot, or None (search then reads everything from SQL)."""
        meta = self.store.meta(collection)
        if meta is None:
            return None
        with self._lock:
            cached = self._cache.get(collection)
            if cached and cached[0] == meta.file:
                return cached[1], cached[2]
            # Let the old index go before the new one is read (searches running keep theirs).
            self._cache.pop(collection, None)
            try:
                index, meta = self.store.load(collection, model=model, dim=dim)
            except SnapshotError as exc:
                log.warning("ignoring snapshot: %s", exc)
                return None
            self._cache[collection] = (meta.file, index, meta)
            return index, meta
