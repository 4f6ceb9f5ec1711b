"""The index writer: bring a collection's FAISS snapshot up to date with SQL."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from storage.chunks import vectors_from_rows
from storage.index_store import IndexStore, SnapshotError, SnapshotMeta, new_index
from storage.models import SEQ_BITS, Chunk, Collection, Tombstone

log = logging.getLogger(__name__)
PAGE = 20_000
TRAIN_SAMPLE = 100_000


@dataclass(slots=True)
class _Live:
    index: faiss.Index
    watermark: int
    file: str | None


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


class IndexWriter:
    """Keeps each collection's index in memory between catch-ups; one per writer process."""

    def __init__(self, sessions: sessionmaker[Session], store: IndexStore) -> None:
        self.sessions = sessions
        self.store = store
        self._live: dict[str, _Live] = {}

    def catch_up(self, collection_name: str) -> SnapshotMeta | None:
        """Add chunks and apply deletions above the watermark; publish if anything changed.

        A file lock per collection makes a second writer (a misconfigured deployment) wait
        its turn instead of publishing over this one.
        """
        folder = self.store.folder(collection_name)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".writer.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._catch_up(collection_name)

    def _catch_up(self, collection_name: str) -> SnapshotMeta | None:
        with self.sessions() as session:
            coll = session.scalars(
                select(Collection).where(Collection.name == collection_name)
            ).one_or_none()
            if coll is None:
                raise LookupError(f"no collection named {collection_name!r}")
            live = self._current(coll)
            target = coll.seq
            if live.watermark >= target:
                return self.store.meta(collection_name)
            try:
                self._apply(session, coll, live, target)
                meta = self.store.publish(
                    collection_name,
                    live.index,
                    model=coll.model,
                    factory=coll.index_factory,
                    watermark=target,
                )
            except BaseException:
                # The in-memory index may hold rows above its watermark: start over next time.
                self._live.pop(collection_name, None)
                raise
        live.watermark, live.file = target, meta.file
        self._purge_tombstones(coll.id, target)
        return meta

    def rebuild(self, collection_name: str) -> SnapshotMeta | None:
        """Drop what is in memory and on disk for the collection and rebuild it from SQL."""
        self._live.pop(collection_name, None)
        self.store.drop_snapshot(collection_name)
        return self.catch_up(collection_name)

    def _current(self, coll: Collection) -> _Live:
        meta = self.store.meta(coll.name)
        live = self._live.get(coll.name)
        if live is not None and meta is not None and live.file == meta.file:
            return live
        try:
            index, meta = self.store.load(coll.name, model=coll.model, dim=coll.dim)
            live = _Live(index, meta.watermark, meta.file)
        except SnapshotError as exc:
            if meta is not None:
                log.warning("rebuilding index of %s from SQL: %s", coll.name, exc)
            live = _Live(new_index(coll.dim, coll.index_factory), 0, None)
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
                live.index.remove_ids(np.asarray(dead, dtype=np.int64))  # type: ignore[arg-type]

    @staticmethod
    def _train(session: Session, coll: Collection, index: faiss.Index, target: int) -> None:
        sample: list[bytes] = []
        for _ids, blobs in _chunk_pages(session, coll.id, 0, target):
            sample.extend(blobs)
            if len(sample) >= TRAIN_SAMPLE:
                break
        if not sample:
            raise SnapshotError(f"index {coll.index_factory!r} needs vectors to train on")
        index.train(vectors_from_rows(sample, coll.dim))

    def _purge_tombstones(self, collection_id: int, upto: int) -> None:
        with self.sessions.begin() as session:
            session.execute(
                delete(Tombstone).where(
                    Tombstone.collection_id == collection_id, Tombstone.seq <= upto
                )
            )
