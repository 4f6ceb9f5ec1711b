"""What a process holds once: database engine, index store, loaded models, the writer."""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from storage.catchup import IndexWriter, PublishPolicy
from storage.db import make_engine, make_sessionmaker
from storage.index_store import IndexStore, SnapshotCache
from tasks.settings import Settings, get_settings

if TYPE_CHECKING:
    from workers.encoding import Embedder


class Runtime:
    """Lazily created resources for one process; models load on first use, never at import."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(make_engine(self.settings.db_url))

    @cached_property
    def store(self) -> IndexStore:
        return IndexStore(self.settings.index_dir)

    @cached_property
    def snapshots(self) -> SnapshotCache:
        return SnapshotCache(self.store)

    @cached_property
    def writer(self) -> IndexWriter:
        s = self.settings
        policy = PublishPolicy(s.publish_rows, s.publish_fraction, s.publish_interval_s)
        return IndexWriter(self.sessions, self.store, policy)

    def embedder(self, model: str) -> Embedder:
        from workers.encoding import Embedder

        with self._lock:
            if model not in self._models:
                self._models[model] = Embedder(
                    model, device=self.settings.device, precision=self.settings.precision
                )
            return self._models[model]


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime
