"""Index types beyond flat: build time, memory per vector, recall@10 against exact (flat)
search and query latency, on ``--vectors`` clustered synthetic unit vectors (384 dims, 1,000
Gaussian clusters). Each index is made as the index writer makes it (``new_index``: ID-mapped,
inner product) and trained on a uniform sample sized as the writer sizes it (``train_size``:
64 vectors per IVF list, at least 100,000).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import faiss
import numpy as np

from bench.common import machine, percentile
from embedq.storage.catchup import train_size
from embedq.storage.index_store import new_index

DIM = 384
K = 10


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        pick = rng.integers(0, len(centres), m)
        block = centres[pick] + 0.08 * rng.standard_normal((m, DIM), dtype=np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def factories(n: int, nlist: int | None) -> list[str]:
    lists = nlist or (4096 if n >= 500_000 else 1024)
    return ["Flat", f"IVF{lists},Flat", f"IVF{lists},PQ48", "HNSW32"]


def tune(index: faiss.Index, factory: str, nprobe: int, ef: int) -> None:
    inner = faiss.downcast_index(index.index)
    if factory.startswith("IVF"):
        faiss.extract_index_ivf(inner).nprobe = nprobe
    elif factory.startswith("HNSW"):
        inner.hnsw.efSearch = ef


def size_on_disk(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def deletes_work(factory: str, sample: np.ndarray) -> bool:
    index = new_index(DIM, factory if not factory.startswith("IVF") else "IVF16,Flat")
    index.train(sample[:2000])
    index.add_with_ids(sample[:2000], np.arange(2000, dtype=np.int64))
    try:
        return int(index.remove_ids(np.arange(10, dtype=np.int64))) == 10
    except RuntimeError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--full", action="store_true", help="--vectors 1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (4096 from 500k)")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ef", type=int, default=64, help="HNSW efSearch")
    args = parser.parse_args(argv)
    n = 1_000_000 if args.full else args.vectors
    print(
        f"machine: {machine()}, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)"
    )
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(n, rng, centres)
    queries = clustered(args.queries, rng, centres)
    ids = np.arange(n, dtype=np.int64)
    sample = data[rng.choice(n, min(n, 100_000), replace=False)]  # for the deletion check
    print(f"{n:,} clustered synthetic vectors, {len(queries)} queries, k={K}")
    truth: np.ndarray | None = None
    rows = []
    for factory in factories(n, args.nlist):
        started = time.perf_counter()
        index = new_index(DIM, factory)
        if not index.is_trained:
            index.train(data[rng.choice(n, min(n, train_size(index)), replace=False)])
        index.add_with_ids(data, ids)
        build = time.perf_counter() - started
        tune(index, factory, args.nprobe, args.ef)
        started = time.perf_counter()
        _, found = index.search(queries, K)
        batch_qps = len(queries) / (time.perf_counter() - started)
        single = []
        for q in queries[:200]:
            started = time.perf_counter()
            index.search(q[None, :], K)
            single.append((time.perf_counter() - started) * 1000)
        if truth is None:
            truth = found
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
        per_vector = size_on_disk(index) / n
        rows.append(
            (factory, build, per_vector, recall, percentile(single, 50), batch_qps,
             deletes_work(factory, sample))
        )  # fmt: skip
        print(f"  {factory}: built in {build:.1f} s", flush=True)
        del index
    print("\n| index | build s | bytes/vector | recall@10 vs flat | p50 ms (1 query) "
          "| QPS (batch) | deletes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    flat_bytes = rows[0][2]
    for factory, build, per_vector, recall, p50, qps, deletes in rows:
        print(
            f"| {factory} | {build:.1f} | {per_vector:,.0f} ({per_vector / flat_bytes:.2f}x) "
            f"| {recall:.3f} | {p50:.2f} | {qps:,.0f} | {'yes' if deletes else 'no'} |"
        )
    print(f"\nIVF nprobe={args.nprobe}, HNSW efSearch={args.ef}; bytes/vector = snapshot file / n")


if __name__ == "__main__":
    main(sys.argv[1:])
