"""Search latency: ``POST /v1/collections/{name}/search`` on a real API process against query
encoding + ``index.search`` in one process, at several concurrencies, on a collection of
``--chunks`` synthetic vectors (random unit vectors; the queries are real SciFact questions).
Also prints the API process's peak RSS.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import (
    api_server,
    bench_runtime,
    fill_synthetic,
    machine,
    mib,
    peak_rss,
    percentile,
    read_jsonl,
    scifact_dir,
)

K = 10
CONCURRENCY = (1, 8, 32)


def load(call: Callable[[str], object], queries: list[str], workers: int, total: int) -> dict:
    """Run ``total`` calls on ``workers`` threads; latency percentiles (ms) and QPS."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            started = time.perf_counter()
            call(queries[n % len(queries)])
            took = time.perf_counter() - started
            with lock:
                latencies.append(took * 1000)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "qps": total / wall,
    }


def paired(
    first: Callable[[str], object], second: Callable[[str], object], queries: list[str], total: int
) -> tuple[dict, dict]:
    """One caller, the two calls alternating on each query: the machine's load changes both
    alike, which matters on a shared machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for n in range(total):
        for call, out in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            call(queries[n % len(queries)])
            out.append((time.perf_counter() - started) * 1000)
    return tuple(  # type: ignore[return-value]
        {"p50": percentile(t, 50), "p99": percentile(t, 99), "qps": 1000 * len(t) / sum(t)}
        for t in times
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench search", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="--chunks 100000")
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level")
    args = parser.parse_args(argv)
    chunks = 100_000 if args.full else args.chunks
    print(f"machine: {machine()}")
    queries = [q["text"] for q in read_jsonl(scifact_dir() / "queries.jsonl", 300)]
    root = Path(tempfile.mkdtemp(prefix="embedq-bench-search-"))
    try:
        run(root, chunks, queries, args.requests)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, chunks: int, queries: list[str], total: int) -> None:
    import httpx

    from embedq.tasks.search import search_threads

    rt = bench_runtime(root)
    fill_synthetic(rt, "bench", chunks)
    meta = rt.writer.catch_up("bench", force=True)
    # A few rows above the snapshot, as between two snapshots.
    fill_synthetic(rt, "bench", 500, seed=1, tag="tail")
    index, meta = rt.store.load("bench", model=meta.model, dim=meta.dim)
    embedder = rt.embedder(meta.model)

    threads = rt.settings.search_threads  # FAISS threads for one query, as the API uses

    def in_process(query: str) -> object:
        vector = embedder.encode_texts([query], 256)
        with search_threads(threads):
            return index.search(vector, K)

    clients = threading.local()

    def over_http(query: str) -> object:
        client = getattr(clients, "client", None)
        if client is None:
            client = clients.client = httpx.Client(base_url=url, timeout=120)
        response = client.post("/v1/collections/bench/search", json={"query": query, "k": K})
        response.raise_for_status()
        return response

    with api_server(root, root / "api.log") as (url, proc):
        for call in (in_process, over_http):
            load(call, queries, 1, 20)  # warm-up
        rows = []
        for workers in CONCURRENCY:
            if workers == 1:
                base, api = paired(in_process, over_http, queries, total)
            else:
                base = load(in_process, queries, workers, total)
                api = load(over_http, queries, workers, total)
            rows.append((workers, base, api))
        api_rss = peak_rss(proc.pid)
    print(f"\n{chunks:,} chunks in the snapshot + 500 above it, k={K}, {total} requests each")
    print(f"FAISS threads for one query: {threads or 'FAISS default'} (EMBEDQ_SEARCH_THREADS)")
    print("\n| concurrency | in-process p50 / p99 ms, QPS | API p50 / p99 ms, QPS | p50 ratio |")
    print("|---|---|---|---|")
    for workers, base, api in rows:
        print(
            f"| {workers} | {base['p50']:.1f} / {base['p99']:.1f}, {base['qps']:.1f} | "
            f"{api['p50']:.1f} / {api['p99']:.1f}, {api['qps']:.1f} | "
            f"{api['p50'] / base['p50']:.2f} |"
        )
    ratio = rows[0][2]["p50"] / rows[0][1]["p50"]
    print(f"\np50 API / in-process at concurrency 1: {ratio:.2f} (target <= 1.3)")
    print(f"peak RSS of the API process: {mib(api_rss)}")


if __name__ == "__main__":
    main(sys.argv[1:])
