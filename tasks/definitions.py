"""Celery tasks: thin shells that count deliveries, retry transient errors and call
tasks.indexing. Each takes ids, never texts."""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import DBAPIError, OperationalError

from tasks import analysis, indexing
from tasks.app import app
from tasks.dispatch import CeleryDispatcher
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, DBAPIError, ConnectionError, TimeoutError)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}
CATCH_UP_KEY = "embedq:catch-up:{}"


@app.task(name="embedq.embed_batch", bind=True, **RETRY)
def embed_batch(self: Task, batch_id: int) -> dict[str, Any]:
    rt = get_runtime()
    attempt = indexing.begin_attempt(rt, batch_id)
    if attempt is None:
        return {"batch": batch_id, "skipped": True}
    if attempt.attempts > rt.settings.max_attempts:
        indexing.fail_batch(rt, batch_id, f"gave up after {attempt.attempts - 1} deliveries")
    else:
        try:
            indexing.embed_batch(rt, batch_id)
        except TRANSIENT:
            raise
        except Exception as exc:
            log.exception("batch %s failed", batch_id)
            indexing.fail_batch(rt, batch_id, f"{type(exc).__name__}: {exc}")
    request_catch_up(attempt.collection)
    indexing.finish(rt, attempt.job_id)
    progress = indexing.job_progress(rt, attempt.job_id)
    self.update_state(state="PROGRESS", meta=progress)
    return {"batch": batch_id, "job": attempt.job_id, **progress}


@app.task(name="embedq.catch_up", **RETRY)
def catch_up(collection: str) -> dict[str, Any]:
    _coalescer().delete(CATCH_UP_KEY.format(collection))
    rt = get_runtime()
    meta = rt.writer.catch_up(collection)
    return {"collection": collection, "watermark": meta.watermark if meta else 0}


@app.task(name="embedq.ingest_file", bind=True)
def ingest_file(self: Task, job_id: str, path: str, fmt: str | None) -> dict[str, Any]:
    rt = get_runtime()
    indexing.ingest_file(rt, job_id, path, fmt, CeleryDispatcher(rt, job_id))
    return {"job": job_id, **indexing.job_progress(rt, job_id)}


@app.task(name="embedq.analyse", **RETRY)
def analyse(job_id: str) -> dict[str, Any]:
    result = analysis.run_analysis_job(get_runtime(), job_id)
    return {"job": job_id, "ok": result is not None}


def request_catch_up(collection: str) -> None:
    """Ask the index writer to catch up; requests made while one is queued coalesce."""
    key = CATCH_UP_KEY.format(collection)
    if _coalescer().set(key, "1", nx=True, ex=600):
        catch_up.apply_async(args=[collection])


@functools.cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def _coalescer() -> Any:
    return _redis(get_runtime().settings.broker_url or "redis://127.0.0.1:6379/0")
