"""Celery tasks: thin shells that count deliveries, retry transient errors and call the use
cases. Each takes ids, never texts; the broker plumbing lives in ``embedq.tasks.broker``."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from embedq.tasks import analysis, broker, feeding, indexing, metrics, names, reconcile, uploads
from embedq.tasks.app import app
from embedq.tasks.dispatch import dispatcher_for
from embedq.tasks.logs import log_context
from embedq.tasks.runtime import get_runtime

log = logging.getLogger(__name__)
# The database or the broker is unreachable for a while (a restart, a failover). Other
# database errors (a missing table, a constraint) are permanent: retrying cannot help.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}

app.steps["worker"].add(broker.ReconcileStep)


@app.task(name=names.EMBED_BATCH, bind=True, **RETRY)
def embed_batch(self: Task, batch_id: int) -> dict[str, Any]:
    rt = get_runtime()
    attempt = indexing.begin_attempt(
        rt, batch_id, reconcile.worker_label(self.request.hostname or "unknown")
    )
    if attempt is None:
        return {"batch": batch_id, "skipped": True}
    with log_context(job_id=attempt.job_id, batch_id=batch_id, collection=attempt.collection):
        _embed_attempt(rt, batch_id, attempt)
    feeding.feed(rt, attempt.job_id, broker.send_embed)
    broker.request_catch_up(attempt.collection)
    indexing.finish(rt, attempt.job_id)
    progress = indexing.job_progress(rt, attempt.job_id)
    self.update_state(state="PROGRESS", meta=progress)
    return {"batch": batch_id, "job": attempt.job_id, **progress}


def _embed_attempt(rt: Any, batch_id: int, attempt: indexing.Attempt) -> None:
    with metrics.timed_batch() as outcome:
        if attempt.attempts > rt.settings.max_attempts:
            metrics.count_failure("gave_up")
            outcome["outcome"] = "failed"
            indexing.fail_batch(rt, batch_id, f"gave up after {attempt.attempts - 1} deliveries")
            return
        try:
            written = indexing.embed_batch(rt, batch_id)
            log.info("batch %s: %d document(s) embedded and stored", batch_id, written)
        except TRANSIENT as exc:
            metrics.count_failure(f"transient:{type(exc).__name__}")
            raise
        except Exception as exc:
            log.exception("batch %s failed", batch_id)
            metrics.count_failure(type(exc).__name__)
            outcome["outcome"] = "failed"
            indexing.fail_batch(rt, batch_id, f"{type(exc).__name__}: {exc}")


MIN_DEFER_S = 0.05
"""A catch-up due sooner than this runs now rather than being sent again."""


@app.task(name=names.CATCH_UP, **RETRY)
def catch_up(collection: str) -> dict[str, Any]:
    delay = broker.catch_up_delay(collection)
    if delay >= MIN_DEFER_S:
        broker.defer_catch_up(collection, delay)
        return {"collection": collection, "deferred_s": round(delay, 3)}
    broker.catch_up_answered(collection)
    try:
        meta = get_runtime().writer.catch_up(collection)
    finally:
        broker.caught_up(collection)
    return {"collection": collection, "watermark": meta.watermark if meta else 0}


@app.task(name=names.INGEST_FILE, bind=True)
def ingest_file(self: Task, job_id: str, path: str, fmt: str | None) -> dict[str, Any]:
    rt = get_runtime()
    uploads.ingest_file(rt, dispatcher_for(rt), job_id, path, fmt)
    return {"job": job_id, **indexing.job_progress(rt, job_id)}


@app.task(name=names.ANALYSE, **RETRY)
def analyse(job_id: str) -> dict[str, Any]:
    result = analysis.run_analysis_job(get_runtime(), job_id)
    return {"job": job_id, "ok": result is not None}


@app.task(name=names.RECONCILE, ignore_result=True)
def reconcile_task() -> dict[str, Any]:
    """Run the reconciler once; sent by ``broker.trigger_reconcile``, one queued at a time."""
    rt = get_runtime()
    broker.reconcile_began(rt.settings.reconcile_every_s)
    return reconcile.reconcile(rt, broker.CeleryBroker()).as_dict()
