"""The index writer: keep a collection's FAISS index up to date with SQL, publish on a policy.

The writer applies new rows and deletions to its in-memory index as they come (work in
proportion to the change) and writes a snapshot only when one is due (``PublishPolicy``), so a
small update to a large collection does not rewrite the whole index. Searches read the newest
snapshot plus the rows above its watermark from SQL, so nothing committed is ever invisible.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.chunks import vectors_from_rows
from embedq.storage.collection_files import remove_orphan_folder
from embedq.storage.collections import find_collection
from embedq.storage.index_store import IndexStore, SnapshotError, SnapshotMeta, new_index
from embedq.storage.jobs import embedding_into
from embedq.storage.lexical import LexicalStore
from embedq.storage.models import SEQ_BITS, Chunk, Collection, Tombstone

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)
PAGE = 20_000
TRAIN_SAMPLE = 100_000
TRAIN_PER_LIST = 64
"""FAISS wants 39 to 256 training vectors per inverted list."""
TRAIN_MAX = 1_000_000
IN_PAGE = 1000


class CollectionGone(LookupError):
    """The collection is not (or no longer) in SQL."""


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    """When a snapshot is due: a snapshot costs a write of the whole index, so it waits until
    enough has changed (``rows``, or ``fraction`` of the snapshot if that is more) or the
    oldest unpublished change is ``interval_s`` old. An index no bigger than ``rows`` is
    published at once (writing it costs no more than the rows allowed to wait), unless a job
    is still embedding into it (``busy``): then at the job's end, not after each of its
    batches."""

    rows: int = 20_000
    fraction: float = 0.1
    interval_s: float = 300.0

    def due(
        self,
        published: SnapshotMeta | None,
        target: int,
        pending_since: datetime | None = None,
        now: datetime | None = None,
        *,
        busy: bool = False,
    ) -> bool:
        """Whether changes up to sequence ``target`` should be published now."""
        if published is None:
            return target > 0 and (not busy or target >= self.rows)
        unpublished = target - published.watermark
        if unpublished <= 0:
            return False
        if published.count + unpublished <= self.rows and not busy:
            return True
        if unpublished >= max(self.rows, self.fraction * published.count):
            return True
        now = now or datetime.now(UTC)
        age = (now - pending_since).total_seconds() if pending_since else 0.0
        return age >= self.interval_s


@dataclass(slots=True)
class _Live:
    index: faiss.Index
    watermark: int  # every change up to here is in ``index``
    file: str | None  # the published snapshot it started from or last wrote
    published: int  # that snapshot's watermark


def _same_snapshot(live: _Live, meta: SnapshotMeta | None) -> bool:
    """Whether the in-memory index grew from the published snapshot (or, with none
    published, from nothing)."""
    return live.file is None if meta is None else live.file == meta.file


def _chunk_pages(
    session: Session, collection_id: int, after: int, upto: int
) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    base = collection_id << SEQ_BITS
    last = base | after
    while True:
        rows = session.execute(
            select(Chunk.id, Chunk.vector)
            .where(Chunk.id > last, Chunk.id <= base | upto)
            .order_by(Chunk.id)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        yield (
            np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows)),
            [r.vector for r in rows],
        )
        last = rows[-1].id


def train_size(index: faiss.Index) -> int:
    """Training vectors for ``index``: TRAIN_PER_LIST per inverted list, at least
    TRAIN_SAMPLE (enough for PQ codebooks), at most TRAIN_MAX (1.5 GB at 384 dimensions)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    lists = int(ivf.nlist) if ivf is not None else 0
    return min(max(TRAIN_SAMPLE, TRAIN_PER_LIST * lists), TRAIN_MAX)


def sample_ids(ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``ids`` drawn uniformly without replacement (all when there are fewer),
    ascending; the same draw for the same seed, so a rebuild trains alike."""
    if len(ids) <= n:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))


class IndexWriter:
    """Keeps each collection's index in memory between catch-ups; one per writer process."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: IndexStore,
        policy: PublishPolicy | None = None,
        lexical: LexicalStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.policy = policy or PublishPolicy()
        self.lexical = lexical
        self._live: dict[str, _Live] = {}

    def catch_up(
        self, collection_name: str, *, force: bool = False, publish: bool = True
    ) -> SnapshotMeta | None:
        """Apply the changes above the in-memory watermark; publish a snapshot if one is due
        (or ``force``). Returns the published snapshot's metadata (None: there is none).
        ``publish=False``: apply the changes to the lexical and the in-memory index only (an
        indexer midway through a job, which publishes at its end).

        A writer that holds no index for the collection and owes no snapshot only notes that
        changes wait, without loading the index. A file lock per collection makes a second
        writer (a misconfigured deployment) wait its turn instead of publishing over this one.
        """
        if self._collection_id(collection_name) is None:
            # Deleted (or never created): nothing to index, and no folder to make for it.
            self.forget(collection_name)
            return None
        with self._locked(collection_name):
            before = self._collection_id(collection_name)
            try:
                if before is None:
                    return None
                return self._catch_up(collection_name, force, publish)
            except CollectionGone:
                return None
            except Exception:
                if self._collection_id(collection_name) == before:
                    raise
                # Deleted meanwhile: its files went from under this catch-up, which owes
                # nothing to a collection that is no more.
                log.info("collection %s was deleted during a catch-up", collection_name)
                return None
            finally:
                self._settle_identity(collection_name, before)

    @contextmanager
    def _locked(self, collection_name: str) -> Iterator[None]:
        folder = self.store.folder(collection_name)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".writer.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def forget(self, collection_name: str) -> None:
        """Let go of the in-memory index of a collection (deleted, or not ours to keep)."""
        self._live.pop(collection_name, None)

    def _collection_id(self, name: str) -> tuple[int, str] | None:
        """Who the collection of this name is: its id and creation time (SQLite may give a
        new collection the id of one deleted just before)."""
        with self.sessions() as session:
            row = session.execute(
                select(Collection.id, Collection.created_at).where(Collection.name == name)
            ).first()
        return (row.id, str(row.created_at)) if row is not None else None

    def _settle_identity(self, name: str, before: tuple[int, str] | None) -> None:
        """After a catch-up: if the collection was deleted (or deleted and created again)
        meanwhile, what this catch-up wrote under its name belongs to no collection."""
        after = self._collection_id(name)
        if after is not None and after == before:
            return
        self.forget(name)
        if after is None:
            remove_orphan_folder(self.store, name)
        else:
            self.store.drop_snapshot(name)

    def due(self, collection_name: str) -> bool:
        """Whether a snapshot of the collection is due, from ``current.json`` and SQL only."""
        with self.sessions() as session:
            coll = self._collection(session, collection_name)
            return self._due(session, coll, self.store.meta(collection_name))

    def rebuild(self, collection_name: str) -> SnapshotMeta | None:
        """Drop what is in memory and on disk for the collection and rebuild it from SQL
        (with the collection's index type as SQL has it now), under the writer's lock."""
        with self._locked(collection_name):
            self._live.pop(collection_name, None)
            self.store.drop_snapshot(collection_name)
            return self._catch_up(collection_name, True, True)

    @staticmethod
    def _collection(session: Session, name: str) -> Collection:
        coll = find_collection(session, name)
        if coll is None:
            raise CollectionGone(f"no collection named {name!r}")
        return coll

    def _due(self, session: Session, coll: Collection, meta: SnapshotMeta | None) -> bool:
        if meta is None:
            return coll.seq > 0 and self.policy.due(
                None, coll.seq, busy=embedding_into(session, coll.id)
            )
        if not self.store.looks_usable(coll.name, meta, model=coll.model, dim=coll.dim):
            return True  # loading it fails: the index is rebuilt from SQL and published
        if coll.seq <= meta.watermark:
            return False
        since = self.store.pending_since(coll.name, meta.watermark)
        return self.policy.due(meta, coll.seq, since, busy=embedding_into(session, coll.id))

    def _catch_up(self, name: str, force: bool, publish: bool) -> SnapshotMeta | None:
        with self.sessions() as session:
            coll = self._collection(session, name)
            target = coll.seq
            if self.lexical is not None:
                # Before any publish: tombstones are purged only up to a published watermark.
                self.lexical.catch_up(session, coll, target)
            meta = self.store.meta(name)
            due = publish and (force or self._due(session, coll, meta))
            live = self._live.get(name)
            held = live is not None and _same_snapshot(live, meta)
            if not due and not held and publish:
                # Nothing owed: leave the snapshot on disk unread; searches read the rest.
                return self._waiting(name, meta, target)
            live = self._current(coll)
            try:
                if live.watermark < target:
                    self._apply(session, coll, live, target)
                    live.watermark = target
                if not due or live.published >= live.watermark:
                    return self._waiting(name, meta, target)
                meta = self.store.publish(
                    name,
                    live.index,
                    model=coll.model,
                    factory=coll.index_factory,
                    watermark=live.watermark,
                )
            except BaseException:
                # The in-memory index may hold rows above its watermark: start over next time.
                self._live.pop(name, None)
                raise
        live.file, live.published = meta.file, meta.watermark
        # Only what the snapshot holds may be forgotten: a restarted writer replays from it.
        self._purge_tombstones(coll.id, meta.watermark)
        return meta

    def _waiting(self, name: str, meta: SnapshotMeta | None, target: int) -> SnapshotMeta | None:
        """No snapshot now: note when changes above the published one began to wait (the
        interval of the policy counts from then); return the published one."""
        if meta is not None and target > meta.watermark:
            self.store.mark_pending(name, meta.watermark)
        return meta

    def _current(self, coll: Collection) -> _Live:
        meta = self.store.meta(coll.name)
        live = self._live.get(coll.name)
        if live is not None and _same_snapshot(live, meta):
            return live
        try:
            index, meta = self.store.load(coll.name, model=coll.model, dim=coll.dim)
            live = _Live(index, meta.watermark, meta.file, meta.watermark)
        except SnapshotError as exc:
            if meta is not None:
                log.warning("rebuilding index of %s from SQL: %s", coll.name, exc)
            live = _Live(new_index(coll.dim, coll.index_factory), 0, None, -1)
        self._live[coll.name] = live
        return live

    def _apply(self, session: Session, coll: Collection, live: _Live, target: int) -> None:
        if not live.index.is_trained:
            self._train(session, coll, live.index, target)
        for ids, blobs in _chunk_pages(session, coll.id, live.watermark, target):
            live.index.add_with_ids(vectors_from_rows(blobs, coll.dim), ids)
        if live.watermark:
            dead = session.scalars(
                select(Tombstone.chunk_id).where(
                    Tombstone.collection_id == coll.id,
                    Tombstone.seq > live.watermark,
                    Tombstone.seq <= target,
                )
            ).all()
            if dead:
                self._remove(session, coll, live, dead, target)

    def _remove(
        self, session: Session, coll: Collection, live: _Live, dead: Sequence[int], target: int
    ) -> None:
        """Drop deleted chunks; an index type that cannot delete (HNSW) is rebuilt from the
        rows SQL holds now, which no longer include them."""
        try:
            live.index.remove_ids(np.asarray(dead, dtype=np.int64))  # type: ignore[arg-type]
        except RuntimeError:
            log.info("%s: %s cannot delete; rebuilding it", coll.name, coll.index_factory)
            live.index = new_index(coll.dim, coll.index_factory)
            if not live.index.is_trained:
                self._train(session, coll, live.index, target)
            for ids, blobs in _chunk_pages(session, coll.id, 0, target):
                live.index.add_with_ids(vectors_from_rows(blobs, coll.dim), ids)

    @staticmethod
    def _train(session: Session, coll: Collection, index: faiss.Index, target: int) -> None:
        """Train on a uniform sample of the collection's rows (ids first, then only the
        sampled vectors), sized by :func:`train_size`, in one preallocated array."""
        base = coll.id << SEQ_BITS
        ids = np.fromiter(
            session.scalars(select(Chunk.id).where(Chunk.id > base, Chunk.id <= base | target)),
            dtype=np.int64,
        )
        if not len(ids):
            raise SnapshotError(f"index {coll.index_factory!r} needs vectors to train on")
        chosen = sample_ids(ids, train_size(index), seed=coll.id)
        sample = np.empty((len(chosen), coll.dim), dtype=np.float32)
        n = 0
        for start in range(0, len(chosen), IN_PAGE):
            part = chosen[start : start + IN_PAGE].tolist()
            blobs = session.scalars(select(Chunk.vector).where(Chunk.id.in_(part))).all()
            sample[n : n + len(blobs)] = vectors_from_rows(list(blobs), coll.dim)
            n += len(blobs)
        index.train(sample[:n])

    def _purge_tombstones(self, collection_id: int, upto: int) -> None:
        with self.sessions.begin() as session:
            session.execute(
                delete(Tombstone).where(
                    Tombstone.collection_id == collection_id, Tombstone.seq <= upto
                )
            )
