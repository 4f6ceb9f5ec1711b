"""The Celery task that delivers one job callback (on the ``default`` queue)."""

from __future__ import annotations

from embedq.tasks import callbacks
from embedq.tasks.app import app
from embedq.tasks.names import DELIVER_CALLBACK
from embedq.tasks.runtime import get_runtime


@app.task(name=DELIVER_CALLBACK, ignore_result=True)
def deliver_callback(job_id: str) -> str:
    """One attempt; a failed one is retried by the watcher once its backoff has passed."""
    return callbacks.deliver(get_runtime(), job_id)
