"""Celery tasks: thin shells that count deliveries, retry transient errors and call
tasks.indexing and tasks.reconcile. Each takes ids, never texts."""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from tasks import analysis, indexing, reconcile
from tasks.app import app
from tasks.dispatch import CeleryDispatcher
from tasks.runtime import get_runtime

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
CATCH_UP_KEY = "embedq:catch-up:{}"
RECONCILE_QUEUED_KEY = reconcile.TRIGGER_KEY + ":queued"
RECONCILE_RAN_KEY = reconcile.TRIGGER_KEY + ":ran"


@app.task(name="embedq.embed_batch", bind=True, **RETRY)
def embed_batch(self: Task, batch_id: int) -> dict[str, Any]:
    rt = get_runtime()
    attempt = indexing.begin_attempt(
        rt, batch_id, reconcile.worker_label(self.request.hostname or "unknown")
    )
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


@app.task(name="embedq.reconcile", ignore_result=True)
def reconcile_task() -> dict[str, Any]:
    """Run the reconciler once; sent by ``trigger_reconcile``, at most one queued at a time."""
    rt = get_runtime()
    client = _coalescer()
    client.delete(RECONCILE_QUEUED_KEY)
    client.set(RECONCILE_RAN_KEY, "1", ex=max(1, math.ceil(rt.settings.reconcile_every_s)))
    return reconcile.reconcile(rt, CeleryBroker()).as_dict()


def trigger_reconcile() -> bool:
    """Queue a reconcile task unless one is queued or one began less than a period ago.

    Called from each worker's timer (``tasks.app.ReconcileStep``): it only talks to Redis,
    briefly, and never runs the reconciler itself. True when a task was sent.
    """
    every = get_runtime().settings.reconcile_every_s
    try:
        client = _coalescer()
        if client.exists(RECONCILE_RAN_KEY):
            return False
        if not client.set(RECONCILE_QUEUED_KEY, "1", nx=True, ex=max(60, math.ceil(10 * every))):
            return False
        if not client.exists(reconcile.EPOCH_KEY):
            # Redis lost its state, queue bindings included: a message sent now would vanish.
            CeleryBroker().redeclare()
        reconcile_task.apply_async(retry=False)
    except Exception as exc:  # never let the worker's timer die of a broker hiccup
        log.warning("could not queue the reconciler: %s", exc)
        return False
    return True


def start_heartbeat(hostname: str) -> reconcile.Heartbeat:
    every = get_runtime().settings.reconcile_every_s
    identity = reconcile.worker_identity(hostname)
    return reconcile.Heartbeat(_coalescer(), identity, reconcile.heartbeat_period(every)).start()


class CeleryBroker:
    """The reconciler's view of Redis and the Celery workers."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.client = _coalescer()

    def epoch_present(self) -> bool:
        return bool(self.client.exists(reconcile.EPOCH_KEY))

    def mark_epoch(self) -> None:
        self.client.set(reconcile.EPOCH_KEY, str(time.time()))

    def redeclare(self) -> None:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()

    def workers(self) -> reconcile.WorkerView:
        alive = {
            key.decode().removeprefix(reconcile.HEARTBEAT_KEY.format(""))
            for key in self.client.scan_iter(match=reconcile.HEARTBEAT_KEY.format("*"))
        }
        inspect = app.control.inspect(timeout=self.timeout)
        answered: set[str] = set()
        running: set[int] = set()
        for replies in (inspect.active(), inspect.reserved(), inspect.scheduled()):
            for hostname, tasks in (replies or {}).items():
                answered.add(hostname)
                running.update(_batch_ids(tasks))
        return reconcile.WorkerView(frozenset(alive), frozenset(answered), frozenset(running))

    def send_embed(self, batch_id: int) -> None:
        embed_batch.apply_async(args=[batch_id])

    def catch_up(self, collection: str) -> None:
        request_catch_up(collection, stale_s=2 * get_runtime().settings.reconcile_every_s)


def _batch_ids(tasks: list[dict[str, Any]]) -> set[int]:
    out = set()
    for task in tasks:
        task = task.get("request", task)  # scheduled() wraps the request
        args = task.get("args")
        if task.get("name") == "embedq.embed_batch" and args:
            if isinstance(args, str):
                args = args.strip("[]()").split(",")
            try:
                out.add(int(args[0]))
            except (TypeError, ValueError):
                continue
    return out


def request_catch_up(collection: str, *, stale_s: float | None = None) -> bool:
    """Ask the index writer to catch up; requests made while one is queued coalesce.

    With ``stale_s``, a request still unanswered after that many seconds (the writer died
    with it, or Redis lost it) is made again. True when a task was sent.
    """
    key = CATCH_UP_KEY.format(collection)
    client = _coalescer()
    now = time.time()
    if not client.set(key, str(now), nx=True, ex=600):
        if stale_s is None:
            return False
        since = client.get(key)
        try:
            fresh = since is not None and now - float(since) <= stale_s
        except ValueError:
            fresh = False
        if fresh:
            return False
        client.set(key, str(now), ex=600)
    catch_up.apply_async(args=[collection])
    return True


@functools.cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def _coalescer() -> Any:
    return _redis(get_runtime().settings.broker_url or "redis://127.0.0.1:6379/0")
