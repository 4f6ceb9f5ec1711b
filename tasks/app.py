"""The Celery application: broker, queues, routing and delivery guarantees, in one place."""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps, signals
from kombu import Exchange, Queue
from pydantic import ValidationError

from embedq.tasks.logs import configure_logging
from embedq.tasks.names import DEFAULT_QUEUE, QUEUES, TASK_QUEUES
from embedq.tasks.settings import Settings, get_settings

# Longer than the longest task, or Redis hands an unacknowledged task to a second worker.
VISIBILITY_TIMEOUT = 6 * 3600


def make_app() -> Celery:
    try:
        settings = get_settings()
    except ValidationError:
        # Made at import: a bad setting must reach the command line's own check, which
        # names it (``embedq: error: bad setting: ...``), not end the import in a traceback.
        settings = Settings.model_construct()
    app = Celery("embedq", include=["embedq.tasks.definitions", "embedq.tasks.callback_task"])
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
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange="embedq",
        task_default_routing_key=DEFAULT_QUEUE,
        task_create_missing_queues=False,
        task_routes={
            task: {"queue": queue, "routing_key": queue} for task, queue in TASK_QUEUES.items()
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
    app.steps["worker"].add(MetricsStep)
    return app


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Workers log in ``EMBEDQ_LOG_FORMAT`` (connecting this stops Celery's own set-up)."""
    configure_logging(get_settings().log_format, loglevel or "INFO")


class MetricsStep(bootsteps.StartStopStep):
    """In a worker's main process: serve the worker metrics on ``EMBEDQ_METRICS_PORT``
    (off when 0); see ``embedq.tasks.metrics``."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.server: Any = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        if settings.metrics_port:
            from embedq.tasks.metrics import start_exporter

            self.server = start_exporter(settings.metrics_port, settings.metrics_addr)

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


app = make_app()
