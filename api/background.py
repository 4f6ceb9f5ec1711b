"""Jobs run by the API process itself on the embedded default (no broker configured).

Requests return at once with a job id; the work runs here on one background thread, one job
at a time, the way a single embedded worker would. The process's index writer keeps each
collection's live index in memory and must not run twice at once, so every in-process
catch-up (from a job or from a deletion) goes through one lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from storage.jobs import fail_job
from tasks.dispatch import InlineDispatcher, dispatcher_for
from tasks.runtime import Runtime

log = logging.getLogger(__name__)


class JobRunner:
    """A one-thread queue of in-process jobs, plus the lock of the in-process index writer."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedq-job")
        self._writer = threading.Lock()
        self._queued: dict[Future[None], tuple[Runtime, str]] = {}
        self._guard = threading.Lock()

    def submit(self, rt: Runtime, job_id: str, work: Callable[[], None]) -> None:
        """Run ``work`` for the job in the background; an exception fails the job."""
        future = self._pool.submit(_guarded, rt, job_id, work)
        with self._guard:
            self._queued[future] = (rt, job_id)
        future.add_done_callback(self._forget)

    def catch_up(self, rt: Runtime, collection: str) -> None:
        """Bring the collection's index up to date: here (serialised) or by the index queue."""
        dispatcher = dispatcher_for(rt)
        if isinstance(dispatcher, InlineDispatcher):
            with self._writer:
                dispatcher.catch_up(collection)
        else:
            dispatcher.catch_up(collection)

    def shutdown(self) -> None:
        """Stop taking work; jobs that never started are failed, the running one finishes."""
        with self._guard:
            queued = list(self._queued.items())
        for future, (rt, job_id) in queued:
            if future.cancel():
                _fail(rt, job_id, "the API server stopped before the job could run")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _forget(self, future: Future[None]) -> None:
        with self._guard:
            self._queued.pop(future, None)


def _guarded(rt: Runtime, job_id: str, work: Callable[[], None]) -> None:
    try:
        work()
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _fail(rt, job_id, f"{type(exc).__name__}: {exc}")


def _fail(rt: Runtime, job_id: str, error: str) -> None:
    try:
        with rt.sessions.begin() as session:
            fail_job(session, job_id, error)
    except Exception:
        log.exception("cannot record the failure of job %s", job_id)
