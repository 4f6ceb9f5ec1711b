"""What a Prometheus scrape of the API's ``/metrics`` costs: ``--collections`` synthetic
collections of ``--chunks`` one-window documents each (half published in a snapshot, half
above it, so the snapshot-lag count has rows to scan), then the p50/p95 of ``GET /metrics``
against ``GET /healthz`` (the baseline: the same app, no SQL counting) in-process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_runtime, fill_synthetic, machine


def _timed(client: Any, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        out.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return out


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"p50 {statistics.median(values) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scrape")
    parser.add_argument("--collections", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=10_000, help="per collection")
    parser.add_argument("--full", action="store_true", help="100 collections of 10,000")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    if args.full:
        args.collections, args.chunks = 100, 10_000
    import os

    from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        os.environ["EMBEDQ_DATA_DIR"] = str(data)
        rt = bench_runtime(data)
        for i in range(args.collections):
            name = f"c{i:03d}"
            fill_synthetic(rt, name, args.chunks // 2, seed=i, tag="a")
            rt.writer.catch_up(name, force=True)
            fill_synthetic(rt, name, args.chunks - args.chunks // 2, seed=1000 + i, tag="b")
        from embedq.api import deps
        from embedq.api.app import create_app

        app = create_app()
        app.dependency_overrides[deps.runtime] = lambda: rt
        with TestClient(app) as client:
            _timed(client, "/metrics", 5)
            body = client.get("/metrics").text
            scrape = _timed(client, "/metrics", args.requests)
            health = _timed(client, "/healthz", args.requests)
        print(machine())
        print(
            f"{args.collections} collections x {args.chunks} chunks, "
            f"{len(body.encode())} bytes of exposition"
        )
        print(f"GET /metrics  {_ms(scrape)}")
        print(f"GET /healthz  {_ms(health)}  (baseline)")
