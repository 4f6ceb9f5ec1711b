"""How work is handed on: to Celery queues when a broker is set, else run right here.

This is the one place that decides between the embedded default and a broker
(``dispatcher_for``); everything above talks to a :class:`Dispatcher` and asks SQL, not the
dispatcher, whether a job has finished.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from embedq.storage.db import transaction
from embedq.storage.jobs import fail_job, unqueued
from embedq.tasks import feeding, indexing
from embedq.tasks.errors import BadInput, Unavailable
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings

log = logging.getLogger(__name__)
FEED_EVERY_S = 0.25
CUT_AHEAD = 2
"""Batches an embedded producer hands to the cutter before it waits for the oldest."""
FORWARD_AHEAD_TOKENS = 262_144
"""Tokens of cut batches that may wait for the forward thread (at least one batch): enough
that a slow forward pass does not stall the cutter."""
CATCH_UP_EVERY_S = 0.5
"""How often, at most, an embedded job applies what it stored to the collection's indexes
meanwhile (on a thread of their own, one catch-up at a time): what is left for the catch-up
at the job's end, which the job waits for, is about this much of its work."""


@dataclass(frozen=True, slots=True)
class Work:
    """A job's run, as a Celery task on a worker or as a function in this process."""

    job_id: str
    task: str
    args: tuple[Any, ...]
    here: Callable[[], object]
    queue: str | None = None


class Background(Protocol):
    """Where a long-running process (the API) runs embedded jobs: off the request."""

    def submit(self, rt: Runtime, job_id: str, work: Callable[[], object]) -> None: ...


class Dispatcher(Protocol):
    def start(self, work: Work) -> None:
        """Run a job: queued for a worker, or here (in the background when there is one)."""

    def ingesting(
        self, job_id: str, collection: str
    ) -> AbstractContextManager[Callable[[indexing.PendingBatch], object]]:
        """While a producer ingests: what to do with each new batch (its documents as just
        stored). Leaving the block normally means everything was ingested."""

    def feed(self, job_id: str) -> int:
        """Hand on the job's batches not yet handed on (within its window); how many."""

    def catch_up(self, collection: str) -> None:
        """Bring the collection's published index up to date, here or on the index queue."""

    def task_tokens(self, model: str) -> int:
        """Tokens an embed task of ``model`` should carry (estimated from the text's length)."""


class InlineDispatcher:
    """Embedded default: every step runs in the calling process.

    While ingesting, three stages run at once: the calling thread stores records and hands
    each new batch on with its documents, a cutter thread cuts the batch into windows, a
    forward thread embeds and writes the batches cut before, in order (``CUT_AHEAD``
    batches wait for the cutter and ``FORWARD_AHEAD_TOKENS`` tokens for the forward thread
    at most); an index thread applies what is written to the indexes meanwhile. Elsewhere
    ``embed`` reads each batch and runs it to the end before returning.
    """

    def __init__(self, rt: Runtime, background: Background | None = None) -> None:
        self.rt = rt
        self.background = background
        self._cutter: ThreadPoolExecutor | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self._cuts: deque[Future[None]] = deque()
        self._forwarding: deque[tuple[Future[None], int]] = deque()
        self._indexer: ThreadPoolExecutor | None = None
        self._following: Future[None] | None = None
        self._collection, self._caught_up = "", 0.0

    def start(self, work: Work) -> None:
        if self.background is None:
            work.here()
        else:
            self.background.submit(self.rt, work.job_id, work.here)

    @contextmanager
    def ingesting(
        self, job_id: str, collection: str
    ) -> Iterator[Callable[[indexing.PendingBatch], object]]:
        with self.overlapped(collection):
            yield self.take
        self.catch_up(collection)

    def feed(self, job_id: str) -> int:
        ran = 0
        while True:
            with self.rt.sessions() as session:
                batch_ids = unqueued(session, job_id, 64)
            for batch_id in batch_ids:
                self.embed(batch_id)
            ran += len(batch_ids)
            if len(batch_ids) < 64:
                return ran

    def catch_up(self, collection: str) -> None:
        # One writer per process: jobs and deletions may catch up from several threads.
        with self.rt.writer_lock:
            self.rt.writer.catch_up(collection)

    def task_tokens(self, model: str) -> int:
        """``EMBEDQ_TASK_TOKENS`` when set; by default at least one forward pass of this
        process's device (65,536 tokens on a GPU): a smaller task leaves the device part idle."""
        settings = self.rt.settings
        if "task_tokens" in settings.model_fields_set:
            return settings.task_tokens
        try:
            forward = settings.batch_tokens or self.rt.embedder(model).batch_tokens
        except Exception:
            # The model cannot load: each batch fails with the reason when it is cut.
            return settings.task_tokens
        return max(settings.task_tokens, forward)

    @contextmanager
    def overlapped(self, collection: str) -> Iterator[None]:
        """Overlap each batch's cutting with the producer and with the previous batch's
        forward pass; leaving the block waits for the last batch. At most every
        ``CATCH_UP_EVERY_S`` an index thread brings the collection's indexes up to what is
        stored, unpublished, so that little is left for the catch-up at the end and the
        forward thread never waits for one."""
        self._collection, self._caught_up = collection, time.monotonic()
        self._cutter = ThreadPoolExecutor(1, thread_name_prefix="embedq-cut")
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="embedq-forward")
        self._indexer = ThreadPoolExecutor(1, thread_name_prefix="embedq-index")
        try:
            yield
        finally:
            try:
                while self._cuts:
                    self._cuts.popleft().result()
                self._wait()
                if self._following is not None:
                    self._following.result()
            finally:
                self._cutter.shutdown()
                self._ahead.shutdown()
                self._indexer.shutdown()
                self._cutter = self._ahead = self._indexer = self._following = None
                self._cuts.clear()

    def embed(self, batch_id: int) -> None:
        """Read a pending batch from SQL and embed it (``take``)."""
        try:
            read = indexing.read_batch(self.rt, batch_id)
        except Exception as exc:
            self._failed(batch_id, exc)
            return
        if read is not None:
            self.take(read)

    def take(self, read: indexing.PendingBatch) -> None:
        """Embed a pending batch: here, or on the cutter and forward threads while a
        producer ingests."""
        if self._cutter is None:
            self._cut_and_store(read)
            return
        while len(self._cuts) >= CUT_AHEAD:
            self._cuts.popleft().result()
        self._cuts.append(self._cutter.submit(self._cut_and_store, read))

    def _cut_and_store(self, read: indexing.PendingBatch) -> None:
        """Cut the batch; store it here, or queue it for the forward thread (one batch in
        its forward pass at a time, in the order cut), waiting while the queue is full."""
        try:
            cut = indexing.cut(self.rt, read)
        except Exception as exc:
            self._failed(read.batch_id, exc)
            return
        if self._ahead is None:
            self._store(cut)
            return
        tokens = sum(len(w.input_ids) for ws in cut.windows for w in ws)
        queued = sum(n for _, n in self._forwarding)
        while self._forwarding and queued + tokens > FORWARD_AHEAD_TOKENS:
            done, n = self._forwarding.popleft()
            done.result()
            queued -= n
        self._forwarding.append((self._ahead.submit(self._store, cut), tokens))

    def _store(self, cut: indexing.CutBatch) -> None:
        try:
            indexing.store_batch(self.rt, cut)
        except Exception as exc:
            self._failed(cut.batch_id, exc)
            return
        self._follow()

    def _follow(self) -> None:
        """Start a catch-up of what is stored on the index thread, unless one is running or
        the last began less than ``CATCH_UP_EVERY_S`` ago (called by the forward thread)."""
        if self._indexer is None or time.monotonic() - self._caught_up < CATCH_UP_EVERY_S:
            return
        if self._following is not None and not self._following.done():
            return
        self._caught_up = time.monotonic()
        self._following = self._indexer.submit(self._catch_up_meanwhile)

    def _catch_up_meanwhile(self) -> None:
        try:
            with self.rt.writer_lock:
                self.rt.writer.catch_up(self._collection, publish=False)
        except Exception:
            # What is stored is committed; the catch-up at the job's end tries again.
            log.exception("catching up %s during the job failed", self._collection)

    def _failed(self, batch_id: int, exc: Exception) -> None:
        log.exception("batch %s failed", batch_id)
        indexing.fail_batch(self.rt, batch_id, f"{type(exc).__name__}: {exc}")

    def _wait(self) -> None:
        while self._forwarding:
            self._forwarding.popleft()[0].result()


class CeleryDispatcher:
    """Queue tasks that carry ids only; batches go out within each job's window."""

    def __init__(self, rt: Runtime) -> None:
        # Imported here: the embedded default never loads Celery (a second of start-up).
        from embedq.tasks import broker

        self.rt = rt
        self.broker = broker

    def start(self, work: Work) -> None:
        try:
            self.broker.send(work.task, work.args, work.queue)
        except Exception as exc:
            log.exception("cannot queue job %s", work.job_id)
            with transaction(self.rt.sessions) as session:
                fail_job(session, work.job_id, f"cannot queue the job: {exc}")
            raise Unavailable(f"cannot queue the job: {exc}") from exc

    @contextmanager
    def ingesting(
        self, job_id: str, collection: str
    ) -> Iterator[Callable[[indexing.PendingBatch], object]]:
        # Workers keep a full window full (each settled batch hands on the next); the
        # producer tops it up at most every FEED_EVERY_S while it ingests, and once at the
        # end, instead of asking SQL after every batch.
        last = -FEED_EVERY_S

        def each(_batch: indexing.PendingBatch) -> None:
            nonlocal last
            if time.monotonic() - last >= FEED_EVERY_S:
                self.feed(job_id)
                last = time.monotonic()

        yield each
        self.feed(job_id)

    def feed(self, job_id: str) -> int:
        return feeding.feed(self.rt, job_id, self.broker.send_embed)

    def catch_up(self, collection: str) -> None:
        self.broker.request_catch_up(collection)

    def task_tokens(self, model: str) -> int:
        # The workers' device is not known here: a GPU stack sets EMBEDQ_TASK_TOKENS.
        return self.rt.settings.task_tokens


def dispatcher_for(rt: Runtime, background: Background | None = None) -> Dispatcher:
    """The broker's dispatcher when ``EMBEDQ_BROKER_URL`` is set, else the embedded one
    (running jobs on ``background`` when given, else in the caller)."""
    if rt.settings.broker_url:
        return CeleryDispatcher(rt)
    return InlineDispatcher(rt, background)


def here(rt: Runtime) -> InlineDispatcher:
    """A dispatcher that runs a job in this process whatever the settings (a CLI export
    writes to the caller's disk)."""
    return InlineDispatcher(rt)


def require_broker(settings: Settings, what: str = "workers") -> str:
    """The broker URL; BadInput when there is none and ``what`` needs one."""
    if not settings.broker_url:
        raise BadInput(f"EMBEDQ_BROKER_URL is not set: {what} need a broker (redis://...)")
    return settings.broker_url
