"""Search modes at scale, in one process: p50/p99 latency of dense, sparse and hybrid search
(and of filtered search at 1 % and 50 % selectivity) against in-process dense search (query
encoding + ``index.search``); lexical index build time and size. The collection holds
``--chunks`` one-window documents whose texts are SciFact abstracts (cycled) and whose vectors
are random unit vectors; ``meta.bucket`` = document number mod 100 drives the filters."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    bench_runtime,
    fill_synthetic,
    machine,
    mib,
    percentile,
    read_jsonl,
    scifact_dir,
)

K = 10
FILTERS: dict[str, dict[str, Any]] = {
    "1 %": {"bucket": 0},
    "50 %": {"bucket": {"lt": 50}},
}


def fill(rt: Any, name: str, n: int) -> None:
    """``n`` one-window documents: SciFact texts (cycled), random vectors, a bucket in meta."""
    texts = [
        f"{d.get('title', '')} {d['text']}".strip()
        for d in read_jsonl(scifact_dir() / "corpus.jsonl")
    ]
    fill_synthetic(
        rt,
        name,
        n,
        tag="d",
        text=lambda number: f"{texts[number % len(texts)]} (copy {number // len(texts)})",
        meta=lambda number: {"bucket": number % 100},
        tokens=256,
    )


def timed(call: Any, queries: list[str]) -> dict[str, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        call(q)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": percentile(times, 50), "p99": percentile(times, 99)}


def run(root: Path, chunks: int, queries: list[str]) -> None:
    from sqlalchemy import select

    from embedq.storage.models import Collection
    from embedq.tasks.search import SearchOptions, search, search_threads

    rt = bench_runtime(root)
    started = time.perf_counter()
    fill(rt, "bench", chunks)
    print(f"stored {chunks:,} windows in {time.perf_counter() - started:.1f} s")
    with rt.sessions() as session:
        coll = session.scalars(select(Collection).where(Collection.name == "bench")).one()
        started = time.perf_counter()
        rt.lexical.catch_up(session, coll, coll.seq)
        build = time.perf_counter() - started
    meta = rt.writer.catch_up("bench", force=True)
    assert meta is not None
    print(
        f"lexical index: built in {build:.1f} s ({chunks / build:,.0f} windows/s), "
        f"{mib(rt.lexical.size('bench'))} on disk; FAISS Flat {mib(meta.size)}"
    )
    index, _ = rt.store.load("bench", model=meta.model, dim=meta.dim)
    embedder = rt.embedder(meta.model)

    def in_process(query: str) -> object:
        vector = embedder.encode_texts([query], 256)
        with search_threads(rt.settings.search_threads):
            return index.search(vector, K)

    def product(options: SearchOptions) -> Any:
        return lambda query: search(rt, "bench", [query], K, options)

    for q in queries[:5]:  # warm up: model, snapshot and lexical reader loaded
        in_process(q)
        product(SearchOptions())(q)
    rows = [("in-process dense (query encoding + index.search)", timed(in_process, queries))]
    for mode in ("dense", "sparse", "hybrid"):
        rows.append((f"embedq {mode}", timed(product(SearchOptions(mode=mode)), queries)))
    for label, spec in FILTERS.items():
        for mode in ("dense", "hybrid"):
            options = SearchOptions(mode=mode, filter=spec)
            rows.append((f"embedq {mode}, filter {label}", timed(product(options), queries)))
    base = rows[0][1]["p50"]
    print("| search | p50 ms | p99 ms | p50 / in-process |")
    print("|---|---|---|---|")
    for label, t in rows:
        print(f"| {label} | {t['p50']:.1f} | {t['p99']:.1f} | {t['p50'] / base:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench hybrid", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="--chunks 100000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    chunks = 100_000 if args.full else args.chunks
    print(f"machine: {machine()}")
    queries = [q["text"] for q in read_jsonl(scifact_dir() / "queries.jsonl", args.queries)]
    root = Path(tempfile.mkdtemp(prefix="embedq-bench-hybrid-"))
    try:
        run(root, chunks, queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)
