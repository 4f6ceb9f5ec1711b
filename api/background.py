"""Jobs run by the API process itself on the embedded default (no broker configured).

Requests return at once with a job id; the work runs here on one background thread, one job
at a time, the way a single embedded worker would (``embedq.tasks.dispatch.InlineDispatcher`` hands
it here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from embedq.storage.db import describe_error, transaction
from embedq.storage.jobs import fail_job
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)


class JobRunner:
    """A one-thread queue of in-process jobs."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedq-job")
        self._queued: dict[Future[None], tuple[Runtime, str]] = {}
        self._guard = threading.Lock()

    def submit(self, rt: Runtime, job_id: str, work: Callable[[], object]) -> None:
        """Run ``work`` for the job in the background; an exception fails the job."""
        future = self._pool.submit(_guarded, rt, job_id, work)
        with self._guard:
            self._queued[future] = (rt, job_id)
        future.add_done_callback(self._forget)

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


def _guarded(rt: Runtime, job_id: str, work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _fail(rt, job_id, describe_error(exc))


def _fail(rt: Runtime, job_id: str, error: str) -> None:
    try:
        with transaction(rt.sessions) as session:
            fail_job(session, job_id, error)
    except Exception:
        log.exception("cannot record the failure of job %s", job_id)
