"""``python -m bench.load``: many clients polling a job and searching while a corpus is indexed.

Starts an ``embedq api`` server on the embedded default (or uses ``--url``), creates the
collection ``load`` with a few documents, uploads a larger corpus as NDJSON so that indexing
runs in the server during the whole measurement, then runs ``--clients`` concurrent clients
for ``--seconds`` seconds, each alternating ``GET /v1/jobs/{id}`` and
``POST /v1/collections/load/search``. Prints requests, errors by status and latency
percentiles per route; exits with status 1 on any error (a non-2xx answer or a failed request).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, api_server, machine

CORPUS = ROOT / "demo" / "corpus.jsonl"
QUERIES = ROOT / "demo" / "queries.txt"
COLLECTION = "load"
SEED_DOCS = 20
ROUTES = ("GET /v1/jobs/{id}", "POST /v1/collections/{name}/search")


def _documents(count: int) -> list[dict[str, Any]]:
    """``count`` documents from the demo corpus, repeated with new ids as needed."""
    base = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]
    out = []
    for n, doc in zip(range(count), itertools.cycle(base), strict=False):
        out.append({"id": f"{doc['id']}~{n // len(base)}", "text": doc["text"]})
    return out


def _queries() -> list[str]:
    lines = QUERIES.read_text(encoding="utf-8").splitlines()
    return [q.strip() for q in lines if q.strip() and not q.startswith("#")] or ["trains"]


def _wait(client: httpx.Client, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    sys.exit(f"job {job_id} did not finish within {timeout:.0f} s")


def _prepare(client: httpx.Client, docs: list[dict[str, Any]]) -> str:
    """Create the collection with a few documents, then start indexing the rest; the job id."""
    client.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
    seed = client.post(
        f"/v1/collections/{COLLECTION}/documents", json={"documents": docs[:SEED_DOCS]}
    )
    _wait(client, seed.raise_for_status().json()["job_id"])
    body = "".join(json.dumps(d) + "\n" for d in docs[SEED_DOCS:]).encode()
    upload = client.post(
        f"/v1/collections/{COLLECTION}/uploads",
        content=body,
        headers={"content-type": "application/x-ndjson"},
    )
    job_id: str = upload.raise_for_status().json()["job_id"]
    return job_id


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, route: str, outcome: str, seconds: float) -> None:
        self.latency[route].append(seconds)
        self.status[route][outcome] += 1

    @property
    def errors(self) -> int:
        return sum(n for c in self.status.values() for s, n in c.items() if not s.startswith("2"))


async def _client(
    http: httpx.AsyncClient, job_id: str, queries: list[str], n: int, end: float, tally: Tally
) -> None:
    k = 0
    while time.monotonic() < end:
        k += 1
        if (n + k) % 2:
            route, call = ROUTES[0], http.get(f"/v1/jobs/{job_id}")
        else:
            query = queries[(n + k) % len(queries)]
            route = ROUTES[1]
            call = http.post(f"/v1/collections/{COLLECTION}/search", json={"query": query, "k": 10})
        start = time.perf_counter()
        try:
            response = await call
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        tally.add(route, outcome, time.perf_counter() - start)


async def _run(url: str, headers: dict[str, str], job_id: str, args: argparse.Namespace) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    queries = _queries()
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=args.timeout
    ) as http:
        end = time.monotonic() + args.seconds
        await asyncio.gather(
            *(_client(http, job_id, queries, n, end, tally) for n in range(args.clients))
        )
    return tally


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def report(tally: Tally, seconds: float, job: dict[str, Any]) -> None:
    total = sum(len(v) for v in tally.latency.values())
    print(f"requests: {total} in {seconds:.1f} s ({total / seconds:.0f}/s), errors: {tally.errors}")
    print(f"{'route':<38} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}  status")
    for route in ROUTES:
        values = tally.latency.get(route, [])
        if not values:
            continue
        ms = [1000 * _percentile(values, q) for q in (0.5, 0.95, 0.99)]
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.status[route].items()))
        print(
            f"{route:<38} {len(values):>6} {ms[0]:>8.1f} {ms[1]:>8.1f} {ms[2]:>8.1f} "
            f"{1000 * max(values):>8.1f}  {statuses}"
        )
    p = job["progress"]
    print(f"indexing job at the end: {job['status']}, {p['done']}/{p['total']} documents")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the run (30)")
    parser.add_argument("--docs", type=int, default=2000, help="documents indexed meanwhile")
    parser.add_argument("--timeout", type=float, default=60, help="per request, seconds")
    parser.add_argument("--url", help="an API that is already running (else one is started)")
    parser.add_argument("--api-key", default=os.environ.get("EMBEDQ_API_KEY"), help="if needed")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.docs <= SEED_DOCS:
        parser.error(f"need --clients >= 1, --seconds > 0 and --docs > {SEED_DOCS}")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    print(f"machine: {machine()}")
    print(f"{args.clients} clients for {args.seconds:.0f} s while indexing {args.docs} documents")
    with tempfile.TemporaryDirectory(prefix="embedq-load-") as tmp:
        if args.url:
            tally, job = _measure(args.url.rstrip("/"), headers, args)
        else:
            with api_server(Path(tmp) / "data", Path(tmp) / "server.log") as (url, _proc):
                tally, job = _measure(url, headers, args)
    report(tally, args.seconds, job)
    if tally.errors:
        sys.exit(1)


def _measure(
    url: str, headers: dict[str, str], args: argparse.Namespace
) -> tuple[Tally, dict[str, Any]]:
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        job_id = _prepare(client, _documents(args.docs))
        tally = asyncio.run(_run(url, headers, job_id, args))
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return tally, job


if __name__ == "__main__":
    main()
