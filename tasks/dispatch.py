"""How work is handed on: to Celery queues when a broker is set, else run right here."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import func, select

from storage.jobs import mark_queued
from storage.models import BatchState, JobBatch
from tasks.runtime import Runtime

if TYPE_CHECKING:
    from tasks.indexing import CutBatch

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def embed(self, batch_id: int) -> None: ...

    def catch_up(self, collection: str) -> None: ...

    def ingest_file(self, job_id: str, path: str, fmt: str | None) -> None: ...

    def analyse(self, job_id: str, kind: str) -> None: ...


class InlineDispatcher:
    """Embedded default: every step runs in the calling process.

    Inside ``overlapped()``, ``embed`` reads and cuts a batch into windows in the calling
    thread while the previous batch's forward pass and write run in a second thread (one batch
    ahead at most); elsewhere it runs each batch to the end before returning.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._ahead: ThreadPoolExecutor | None = None
        self._running: Future[None] | None = None

    @contextmanager
    def overlapped(self) -> Iterator[None]:
        """Overlap each batch's tokenising with the previous one's forward pass; leaving
        the block waits for the last batch."""
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="embedq-forward")
        try:
            yield
        finally:
            self._wait()
            self._ahead.shutdown()
            self._ahead = None

    def embed(self, batch_id: int) -> None:
        from tasks import indexing

        try:
            cut = indexing.cut_batch(self.rt, batch_id)
        except Exception as exc:
            self._failed(batch_id, exc)
            return
        if cut is None:
            return
        if self._ahead is None:
            self._store(cut)
            return
        self._wait()
        self._running = self._ahead.submit(self._store, cut)

    def _store(self, cut: CutBatch) -> None:
        from tasks import indexing

        try:
            indexing.store_batch(self.rt, cut)
        except Exception as exc:
            self._failed(cut.batch_id, exc)

    def _failed(self, batch_id: int, exc: Exception) -> None:
        from tasks import indexing

        log.exception("batch %s failed", batch_id)
        indexing.fail_batch(self.rt, batch_id, f"{type(exc).__name__}: {exc}")

    def _wait(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.result()

    def catch_up(self, collection: str) -> None:
        from tasks import indexing

        indexing.catch_up(self.rt, collection)

    def ingest_file(self, job_id: str, path: str, fmt: str | None) -> None:
        from tasks import indexing

        indexing.ingest_file(self.rt, job_id, path, fmt, self, inline=True)

    def analyse(self, job_id: str, kind: str) -> None:
        from tasks.analysis import run_analysis_job

        run_analysis_job(self.rt, job_id)


class CeleryDispatcher:
    """Queue tasks that carry ids only; the producer waits while too many batches are pending."""

    def __init__(self, rt: Runtime, job_id: str | None = None) -> None:
        self.rt = rt
        self.job_id = job_id

    def embed(self, batch_id: int) -> None:
        from tasks.definitions import embed_batch

        if self.job_id:
            self._wait_for_room(self.job_id)
        with self.rt.sessions.begin() as session:
            mark_queued(session, batch_id)
        embed_batch.apply_async(args=[batch_id])

    def catch_up(self, collection: str) -> None:
        from tasks.definitions import request_catch_up

        request_catch_up(collection)

    def ingest_file(self, job_id: str, path: str, fmt: str | None) -> None:
        from tasks.definitions import ingest_file

        ingest_file.apply_async(args=[job_id, path, fmt])

    def analyse(self, job_id: str, kind: str) -> None:
        from tasks.analysis import QUEUES
        from tasks.definitions import analyse

        queue = QUEUES.get(kind, "default")
        analyse.apply_async(args=[job_id], queue=queue, routing_key=queue)

    def _wait_for_room(self, job_id: str) -> None:
        limit = self.rt.settings.max_pending_batches
        while True:
            with self.rt.sessions() as session:
                pending = session.scalar(
                    select(func.count())
                    .select_from(JobBatch)
                    .where(JobBatch.job_id == job_id, JobBatch.state == BatchState.pending)
                )
            if (pending or 0) < limit:
                return
            time.sleep(0.2)


def dispatcher_for(rt: Runtime, job_id: str | None = None) -> Dispatcher:
    if rt.settings.broker_url:
        return CeleryDispatcher(rt, job_id)
    return InlineDispatcher(rt)
