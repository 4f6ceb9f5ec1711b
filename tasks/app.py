"""The Celery application: broker, queues, routing and delivery guarantees, in one place."""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps
from kombu import Exchange, Queue

from tasks.settings import get_settings

QUEUES = ("embed", "index", "default")
# Longer than the longest task, or Redis hands an unacknowledged task to a second worker.
VISIBILITY_TIMEOUT = 6 * 3600


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("embedq", include=["tasks.definitions"])
    exchange = Exchange("embedq", type="direct")
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend or settings.broker_url,
        result_expires=24 * 3600,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(q, exchange, routing_key=q) for q in QUEUES],
        task_default_queue="default",
        task_default_exchange="embedq",
        task_default_routing_key="default",
        task_create_missing_queues=False,
        task_routes={
            "embedq.embed_batch": {"queue": "embed", "routing_key": "embed"},
            "embedq.catch_up": {"queue": "index", "routing_key": "index"},
            "embedq.ingest_file": {"queue": "default", "routing_key": "default"},
            "embedq.analyse": {"queue": "default", "routing_key": "default"},
            "embedq.reconcile": {"queue": "default", "routing_key": "default"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
    )
    app.steps["worker"].add(ReconcileStep)
    return app


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
        from tasks.definitions import start_heartbeat, trigger_reconcile

        self.heartbeat = start_heartbeat(parent.hostname)
        trigger_reconcile()
        every = get_settings().reconcile_every_s
        self.tref = parent.timer.call_repeatedly(every, trigger_reconcile, priority=10)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None


app = make_app()
