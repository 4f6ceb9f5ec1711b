"""What a process holds once: database engine, index store, loaded models, the writer."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.catchup import IndexWriter, PublishPolicy
from embedq.storage.db import make_engine, make_sessionmaker
from embedq.storage.index_store import IndexStore, SnapshotCache
from embedq.storage.lexical import LexicalStore
from embedq.tasks.metrics import record_model_load
from embedq.tasks.settings import Settings, get_settings

if TYPE_CHECKING:
    from embedq.workers.encoding import Embedder


class Runtime:
    """Lazily created resources for one process; models load on first use, never at import."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: OrderedDict[str, Embedder] = OrderedDict()
        self._lock = threading.Lock()
        self.writer_lock = threading.Lock()
        """Held by an in-process catch-up: the writer's live indexes are not thread-safe."""

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
    def lexical(self) -> LexicalStore:
        return LexicalStore(self.settings.index_dir)

    @cached_property
    def writer(self) -> IndexWriter:
        s = self.settings
        policy = PublishPolicy(s.publish_rows, s.publish_fraction, s.publish_interval_s)
        return IndexWriter(self.sessions, self.store, policy, self.lexical)

    def embedder(self, model: str) -> Embedder:
        return self._embedder(model, self.settings.precision, model)

    def query_embedder(self, model: str) -> Embedder:
        """The encoder for search queries: the indexing one, except where ``auto`` means bf16
        on a CPU (torch): queries then go through the fp32 ONNX copy, which a cold process
        loads without importing torch (its vectors are within cosine 0.9999 of bf16's)."""
        if self._queries_in_fp32:
            return self._embedder(model, "fp32", f"{model} (queries)")
        return self.embedder(model)

    @cached_property
    def _queries_in_fp32(self) -> bool:
        """Decided once per process: it reads the device and the CPU's flags."""
        from embedq.workers.models import choose_device, precision_name

        s = self.settings
        on_cpu = s.precision == "auto" and choose_device(s.device) == "cpu"
        return on_cpu and precision_name("cpu") == "bf16"

    def _embedder(self, model: str, precision: str, key: str) -> Embedder:
        from embedq.workers.encoding import Embedder

        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            # Least recently used first out: a process holds at most ``model_cache`` models.
            while len(self._models) >= self.settings.model_cache:
                self._models.popitem(last=False)
            start = time.perf_counter()
            embedder = Embedder(model, device=self.settings.device, precision=precision)
            record_model_load(model, time.perf_counter() - start)
            self._models[key] = embedder
            return embedder


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime; made once even when a worker's threads ask at the same time."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def close_runtime() -> None:
    """Close the process runtime's database connections, if it opened any (a command that
    leaves without the interpreter's teardown says goodbye to the server first)."""
    with _runtime_lock:
        if _runtime is not None and "sessions" in _runtime.__dict__:
            _runtime.sessions.kw["bind"].dispose()
