"""``GET /metrics``: Prometheus text exposition of the API process and of the state in SQL.

Per request: latency by route template, method and status (``RequestMetrics``); per search:
latency by mode (``observe_search``). Per scrape, read from SQL (so any number of API
processes agree): jobs by kind and status, batches by state, and per collection the stored
documents and chunks, the vectors in the published snapshot and the rows not yet published
(snapshot lag). Worker metrics (``embedq.tasks.metrics``) are served by each worker on
``EMBEDQ_METRICS_PORT``; an API running jobs itself (no broker) serves them here as well.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedq.api.deps import RuntimeDep
from embedq.storage.stats import batch_counts, collection_rows, job_counts
from embedq.tasks.metrics import scrape_registry
from embedq.tasks.runtime import Runtime

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@functools.cache
def _request_seconds() -> Histogram:
    return Histogram(
        "embedq_http_request_seconds",
        "HTTP request latency by route template, method and status code",
        ["route", "method", "status"],
        buckets=LATENCY_BUCKETS,
    )


@functools.cache
def _search_seconds() -> Histogram:
    return Histogram(
        "embedq_search_seconds",
        "Search latency (encoding and FAISS), by mode",
        ["mode"],
        buckets=LATENCY_BUCKETS,
    )


def observe_search(mode: str, seconds: float) -> None:
    _search_seconds().labels(mode=mode).observe(seconds)


class RequestMetrics:
    """ASGI middleware timing every HTTP request under its route template (``/v1/jobs/{job_id}``,
    never the raw path, so the series stay few); unmatched paths count as ``unmatched``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _request_seconds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                code[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            _request_seconds().labels(route, scope["method"], str(code[0])).observe(
                time.perf_counter() - start
            )


class StateCollector(Collector):
    """Reads the queue and collection state from SQL at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.rt.sessions() as session:
            jobs = job_counts(session)
            batches = batch_counts(session)
            rows = collection_rows(session, self.rt.store)
        family = GaugeMetricFamily(
            "embedq_jobs", "Jobs by kind and status", labels=["kind", "status"]
        )
        for (kind, status), n in sorted(jobs.items()):
            family.add_metric([kind, status], n)
        yield family
        family = GaugeMetricFamily(
            "embedq_batches",
            "Embed batches by state: waiting (not yet sent to the broker), queued, running, "
            "done, failed",
            labels=["state"],
        )
        for state, n in sorted(batches.items()):
            family.add_metric([state], n)
        yield family
        for field, help_text in (
            ("documents", "Documents stored per collection"),
            ("chunks", "Chunk rows (window vectors) stored per collection"),
            ("indexed", "Vectors in the published index snapshot per collection"),
            ("unpublished", "Rows changed since the published snapshot (snapshot lag)"),
        ):
            family = GaugeMetricFamily(
                f"embedq_collection_{field}", help_text, labels=["collection"]
            )
            for row in rows:
                family.add_metric([row.name], getattr(row, field))
            yield family


router = APIRouter()


@router.get("/metrics", tags=["operations"], response_class=Response)
def metrics(rt: RuntimeDep) -> Response:
    """Prometheus text format: request and search latency, jobs, batches, collections."""
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(rt))
    body: Any = generate_latest(scrape_registry()) + generate_latest(state)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
