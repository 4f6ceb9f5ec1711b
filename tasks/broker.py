"""Talking to the broker: sending tasks by name, coalesced catch-up requests, the
reconciler's trigger and view of the workers, worker heartbeats.

Tasks are sent by the names in ``embedq.tasks.names``, so this module never imports the task
definitions (which import the use cases that send work: no loop).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from celery import bootsteps

from embedq.tasks import names
from embedq.tasks.app import app
from embedq.tasks.reconcile import Heartbeat, WorkerView, heartbeat_period, worker_identity
from embedq.tasks.runtime import get_runtime

log = logging.getLogger(__name__)
MAX_QUEUE_SCAN = 100_000
"""Messages of the embed queue the reconciler reads at most (the queue holds each job's
window, ``EMBEDQ_MAX_PENDING_BATCHES``, so this many means something else is wrong)."""


def send(task: str, args: Sequence[Any], queue: str | None = None) -> None:
    """Queue one task (ids only in ``args``) on its queue, or on ``queue``."""
    queue = queue or names.TASK_QUEUES[task]
    app.send_task(task, args=list(args), queue=queue, routing_key=queue)


def send_embed(batch_id: int) -> None:
    send(names.EMBED_BATCH, [batch_id])


@functools.cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def client() -> Any:
    """The Redis client for the broker's database (coalescing keys, heartbeats)."""
    return _redis(get_runtime().settings.broker_url or "redis://127.0.0.1:6379/0")


def request_catch_up(collection: str, *, stale_s: float | None = None) -> bool:
    """Ask the index writer to catch up; requests made while one is queued coalesce.

    With ``stale_s``, a request still unanswered after that many seconds (the writer died
    with it, or Redis lost it) is made again. True when a task was sent.
    """
    key = names.CATCH_UP_KEY.format(collection)
    redis = client()
    now = time.time()
    if not redis.set(key, str(now), nx=True, ex=600):
        if stale_s is None:
            return False
        since = redis.get(key)
        try:
            fresh = since is not None and now - float(since) <= stale_s
        except ValueError:
            fresh = False
        if fresh:
            return False
        redis.set(key, str(now), ex=600)
    send(names.CATCH_UP, [collection])
    return True


def catch_up_answered(collection: str) -> None:
    """The writer took the request: the next one is sent again."""
    client().delete(names.CATCH_UP_KEY.format(collection))


CATCH_UP_GAP_S = 1.0
"""The index writer catches a collection up at most once in this many seconds. During a job
every task asks for one, and each has a fixed cost (a lexical commit, SQL round trips)
whatever little it applies."""
_caught_up: dict[str, float] = {}


def catch_up_delay(collection: str) -> float:
    """Seconds before this writer process may catch the collection up again (0: now)."""
    last = _caught_up.get(collection)
    return 0.0 if last is None else max(0.0, CATCH_UP_GAP_S - (time.monotonic() - last))


def caught_up(collection: str) -> None:
    """A catch-up of the collection ended in this process now."""
    _caught_up[collection] = time.monotonic()


def defer_catch_up(collection: str, delay_s: float) -> None:
    """Run the pending request later; its key stays set, so that the requests made
    meanwhile coalesce into this one."""
    queue = names.TASK_QUEUES[names.CATCH_UP]
    app.send_task(
        names.CATCH_UP, args=[collection], queue=queue, routing_key=queue, countdown=delay_s
    )


def reconcile_began(every_s: float) -> None:
    """A reconcile task started: another may be queued, not begun before a period passed."""
    redis = client()
    redis.delete(names.RECONCILE_QUEUED_KEY)
    redis.set(names.RECONCILE_RAN_KEY, "1", ex=max(1, math.ceil(every_s)))


def trigger_reconcile() -> bool:
    """Queue a reconcile task unless one is queued or one began less than a period ago.

    Called from each worker's timer (``embedq.tasks.app.ReconcileStep``): it only talks to Redis,
    briefly, and never runs the reconciler itself. True when a task was sent.
    """
    every = get_runtime().settings.reconcile_every_s
    try:
        redis = client()
        if redis.exists(names.RECONCILE_RAN_KEY):
            return False
        ttl = max(60, math.ceil(10 * every))
        if not redis.set(names.RECONCILE_QUEUED_KEY, "1", nx=True, ex=ttl):
            return False
        if not redis.exists(names.EPOCH_KEY):
            # Redis lost its state, queue bindings included: a message sent now would vanish.
            CeleryBroker().redeclare()
        app.send_task(names.RECONCILE, retry=False, queue=names.DEFAULT_QUEUE)
    except Exception as exc:  # never let the worker's timer die of a broker hiccup
        log.warning("could not queue the reconciler: %s", exc)
        return False
    return True


def start_heartbeat(hostname: str) -> Heartbeat:
    every = get_runtime().settings.reconcile_every_s
    identity = worker_identity(hostname)
    return Heartbeat(client(), identity, heartbeat_period(every)).start()


class CeleryBroker:
    """The reconciler's view of Redis and the Celery workers."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.client = client()

    def epoch_present(self) -> bool:
        return bool(self.client.exists(names.EPOCH_KEY))

    def mark_epoch(self) -> None:
        self.client.set(names.EPOCH_KEY, str(time.time()))

    def redeclare(self) -> None:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()

    def workers(self) -> WorkerView:
        alive = {
            key.decode().removeprefix(names.HEARTBEAT_KEY.format(""))
            for key in self.client.scan_iter(match=names.HEARTBEAT_KEY.format("*"))
        }
        inspect = app.control.inspect(timeout=self.timeout)
        answered: set[str] = set()
        running: set[int] = set()
        for replies in (inspect.active(), inspect.reserved(), inspect.scheduled()):
            for hostname, tasks in (replies or {}).items():
                answered.add(hostname)
                running.update(_batch_ids(tasks))
        return WorkerView(
            frozenset(alive), frozenset(answered), frozenset(running), self.queued_batches()
        )

    def queued_batches(self) -> frozenset[int] | None:
        """Batch ids whose messages wait in the embed queue (None: it could not be read)."""
        try:
            raw = self.client.lrange(names.EMBED_QUEUE, 0, MAX_QUEUE_SCAN - 1)
        except Exception as exc:  # the broker may be unreachable: the lease still applies
            log.warning("embed queue not read: %s", exc)
            return None
        if len(raw) >= MAX_QUEUE_SCAN:
            return None  # too long to have read all of it: judge nothing by it
        return frozenset(i for i in map(_message_batch, raw) if i is not None)

    def send_embed(self, batch_id: int) -> None:
        send_embed(batch_id)

    def catch_up(self, collection: str) -> None:
        request_catch_up(collection, stale_s=2 * get_runtime().settings.reconcile_every_s)


def _message_batch(raw: bytes) -> int | None:
    """The batch id of an ``embed_batch`` message as Celery's Redis transport stores it."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != names.EMBED_BATCH:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _batch_ids(tasks: list[dict[str, Any]]) -> set[int]:
    out = set()
    for task in tasks:
        task = task.get("request", task)  # scheduled() wraps the request
        args = task.get("args")
        if task.get("name") == names.EMBED_BATCH and args:
            if isinstance(args, str):
                args = args.strip("[]()").split(",")
            try:
                out.add(int(args[0]))
            except (TypeError, ValueError):
                continue
    return out


class ReconcileStep(bootsteps.StartStopStep):
    """In every worker: a heartbeat thread, and on the worker's timer (at start, then every
    ``EMBEDQ_RECONCILE_EVERY_S``) a coalesced request for one ``embedq.reconcile`` task on
    the ``default`` queue. The timer only sends; the reconciler runs as a task."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.heartbeat: Any = None

    def start(self, parent: Any) -> None:
        self.heartbeat = start_heartbeat(parent.hostname)
        trigger_reconcile()
        every = get_runtime().settings.reconcile_every_s
        self.tref = parent.timer.call_repeatedly(every, trigger_reconcile, priority=10)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
