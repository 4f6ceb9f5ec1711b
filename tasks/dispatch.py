"""How work is handed on: to Celery queues when a broker is set, else run right here."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from sqlalchemy import func, select

from storage.jobs import mark_queued
from storage.models import BatchState, JobBatch
from tasks.runtime import Runtime

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def embed(self, batch_id: int) -> None: ...

    def catch_up(self, collection: str) -> None: ...

    def ingest_file(self, job_id: str, path: str, fmt: str | None) -> None: ...

    def analyse(self, job_id: str, kind: str) -> None: ...


class InlineDispatcher:
    """Embedded default: every step runs in the calling process."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def embed(self, batch_id: int) -> None:
        from tasks import indexing

        try:
            indexing.embed_batch(self.rt, batch_id)
        except Exception as exc:
            log.exception("batch %s failed", batch_id)
            indexing.fail_batch(self.rt, batch_id, f"{type(exc).__name__}: {exc}")

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
