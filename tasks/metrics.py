"""Worker-side Prometheus metrics: tokens embedded, batch latency, failures, model load time.

The metrics are created on first use, never at import: ``prometheus_client`` picks its value
store when it is first imported, and ``embedq worker`` must point it at a multiprocess folder
before that (``prepare_worker_metrics``), so that the exporter in the worker's main process
also sees what prefork children record. ``embedq worker`` serves them on
``EMBEDQ_METRICS_PORT`` (``embedq.tasks.app.MetricsStep``). In an embedded run (the CLI, or an API
without a broker) they land in the process's default registry, which ``/metrics`` serves.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class WorkerMetrics:
    tokens: Any
    batch_seconds: Any
    failures: Any
    model_load_seconds: Any


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """The worker's metric families (created once per process, on first use)."""
    from prometheus_client import Counter, Gauge, Histogram

    made = WorkerMetrics(
        tokens=Counter(
            "embedq_tokens_embedded",
            "Tokens embedded (window tokens, special tokens included)",
            ["model"],
        ),
        batch_seconds=Histogram(
            "embedq_batch_seconds",
            "Wall time of one embed batch task, by outcome",
            ["outcome"],
            buckets=BATCH_BUCKETS,
        ),
        failures=Counter(
            "embedq_batch_failures", "Embed batch deliveries that failed, by reason", ["reason"]
        ),
        model_load_seconds=Gauge(
            "embedq_model_load_seconds",
            "Seconds the last load of each model took",
            ["model"],
            multiprocess_mode="mostrecent",
        ),
    )
    # Series that exist at zero from the start, so a scrape before the first batch (and
    # rate() over the first one) sees them; labelled series otherwise appear on first use.
    for outcome in ("done", "failed", "retry"):
        made.batch_seconds.labels(outcome=outcome)
    made.failures.labels(reason="gave_up")
    return made


def count_tokens(model: str, tokens: int) -> None:
    worker_metrics().tokens.labels(model=model).inc(tokens)


def count_failure(reason: str) -> None:
    worker_metrics().failures.labels(reason=reason).inc()


@contextmanager
def timed_batch() -> Iterator[dict[str, str]]:
    """Time an embed batch; the caller sets ``outcome`` in the yielded dict."""
    labels = {"outcome": "done"}
    start = time.perf_counter()
    try:
        yield labels
    except BaseException:
        labels["outcome"] = "retry"
        raise
    finally:
        worker_metrics().batch_seconds.labels(**labels).observe(time.perf_counter() - start)


def record_model_load(model: str, seconds: float) -> None:
    worker_metrics().model_load_seconds.labels(model=model).set(seconds)


def prepare_worker_metrics() -> bool:
    """Point prometheus_client at a fresh multiprocess folder before anything imports it.

    Called by ``embedq worker`` when ``EMBEDQ_METRICS_PORT`` is set; a folder the operator
    set in ``PROMETHEUS_MULTIPROC_DIR`` is used as it is. False when it is too late (the
    library is already loaded): the exporter then shows only the main process's metrics.
    """
    if os.environ.get(MULTIPROC_ENV):
        return True
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client already loaded: worker metrics from one process only")
        return False
    folder = tempfile.mkdtemp(prefix="embedq-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return True


def scrape_registry() -> Any:
    """The registry to expose: every process's files in multiprocess mode, else this one's."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def start_exporter(port: int, addr: str) -> Any:
    """Serve the worker metrics over HTTP from a daemon thread; returns the server."""
    from prometheus_client import start_http_server

    worker_metrics()  # the families exist from the first scrape on
    try:
        server, _ = start_http_server(port, addr=addr, registry=scrape_registry())
    except OSError as exc:  # the worker's job matters more than its metrics
        log.error("cannot serve worker metrics on %s:%s: %s", addr, port, exc)
        return None
    log.info("worker metrics on http://%s:%s/metrics", addr, port)
    return server
