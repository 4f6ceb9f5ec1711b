"""Small updates to big collections: ``embedq index`` of 1,000 new short documents into a
collection that holds ``--small`` chunks and one that holds ``--large`` (synthetic vectors,
inserted in bulk, with a snapshot published by the index writer).

For each size it reports: the whole command (a separate process, model load included) and
that process's peak RSS; the same update run in-process, with the index writer's catch-up
timed on its own; a writer that already holds the index applying 1,000 more rows; and what a
catch-up that publishes costs at that size (what every update paid before the publish policy).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    bench_runtime,
    cli_env,
    fill_synthetic,
    machine,
    mib,
    read_jsonl,
    run_measured,
    scifact_dir,
)

NEW_DOCS = 1000


def write_updates(path: Path, offset: int, n: int, tag: str) -> None:
    """``n`` short documents (SciFact titles) as JSONL."""
    import json

    records = read_jsonl(scifact_dir() / "corpus.jsonl", offset + n)
    with path.open("w") as fh:
        for i, rec in enumerate(records):
            if i >= offset:
                fh.write(json.dumps({"id": f"{tag}-{i}", "text": rec["title"]}) + "\n")


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def held_writer_delta(rt: Any, name: str, rows: int) -> float:
    """Seconds for a writer that already holds the index to take ``rows`` new rows."""
    from bench.common import fill_synthetic as more
    from embedq.storage.catchup import IndexWriter

    writer = IndexWriter(rt.sessions, rt.store, rt.writer.policy)
    writer._current(_collection(rt, name))  # load once, as a long-running writer has
    # The first rows after a load grow FAISS's storage from its exact loaded size (a copy of
    # the whole index, once); a long-running writer has paid that: time the next update.
    more(rt, name, rows, seed=7, tag="held")
    writer.catch_up(name)
    more(rt, name, rows, seed=8, tag="held2")
    return timed(writer.catch_up, name)[0]


def _collection(rt: Any, name: str) -> Any:
    from sqlalchemy import select

    from embedq.storage.models import Collection

    with rt.sessions() as session:
        coll = session.scalars(select(Collection).where(Collection.name == name)).one()
        session.expunge(coll)
        return coll


def one_size(root: Path, size: int, updates: tuple[Path, Path], docs: int) -> dict[str, float]:
    from embedq.tasks.collection_setup import CollectionSpec
    from embedq.tasks.producer import submit_index_job

    data = root / f"n{size}"
    rt = bench_runtime(data)
    name = "big"
    build_s, _ = timed(fill_synthetic, rt, name, size)
    snap_s, meta = timed(rt.writer.catch_up, name, force=True)
    print(
        f"  {size:,} chunks: bulk insert {build_s:.1f} s, first snapshot {snap_s:.1f} s "
        f"({mib(meta.size)})",
        flush=True,
    )
    env = cli_env(data)
    warm = root / "warm.jsonl"
    cli = [sys.executable, "-m", "embedq.api.cli"]
    run_measured([*cli, "index", str(warm), "-c", "warm", "-q"], env)  # caches, model files
    e2e_s, rss, _ = run_measured([*cli, "index", str(updates[0]), "-c", name, "-q"], env)

    # The same kind of update in this process, the writer's catch-up timed on its own.
    fresh = bench_runtime(data)
    fresh.embedder(meta.model)  # loaded outside the timing, as in a running worker
    spent: list[float] = []
    real = fresh.writer.catch_up

    def catch_up(collection: str, **kwargs: Any) -> Any:
        seconds, value = timed(real, collection, **kwargs)
        spent.append(seconds)
        return value

    fresh.writer.catch_up = catch_up
    inproc_s, _ = timed(
        submit_index_job, fresh, CollectionSpec(name), [str(updates[1])], progress=False
    )
    held_s = held_writer_delta(bench_runtime(data), name, docs)
    from embedq.storage.catchup import IndexWriter

    publish_s, _ = timed(IndexWriter(rt.sessions, rt.store).catch_up, name, force=True)
    return {
        "e2e": e2e_s,
        "rss": rss,
        "inproc": inproc_s,
        "catch_up": sum(spent),
        "held": held_s,
        "publish": publish_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench updates", description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--full", action="store_true", help="--large 1000000")
    parser.add_argument("--docs", type=int, default=NEW_DOCS, help="new documents per update")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args(argv)
    large = 1_000_000 if args.full else args.large
    print(f"machine: {machine()}")
    root = Path(tempfile.mkdtemp(prefix="embedq-bench-updates-"))
    try:
        updates = (root / "update-a.jsonl", root / "update-b.jsonl")
        write_updates(updates[0], 0, args.docs, "new-a")
        write_updates(updates[1], args.docs, args.docs, "new-b")
        write_updates(root / "warm.jsonl", 3 * args.docs, 16, "warm")
        results = {size: one_size(root, size, updates, args.docs) for size in (args.small, large)}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(results, args.small, large, args.docs)


def report(results: dict[int, dict[str, float]], small: int, large: int, docs: int) -> None:
    rows = [
        (f"embedq index, {docs:,} docs, whole command (s)", "e2e", "{:.2f}"),
        ("  peak RSS of that process", "rss", "mib"),
        ("same update in-process (s)", "inproc", "{:.2f}"),
        ("  of which the writer's catch-up (s)", "catch_up", "{:.3f}"),
        (f"writer holding the index, +{docs:,} rows (s)", "held", "{:.3f}"),
        ("a catch-up that publishes (old: every update) (s)", "publish", "{:.2f}"),
    ]
    print(f"\n| measure | {small:,} chunks | {large:,} chunks | ratio |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        a, b = results[small][key], results[large][key]
        cell = (lambda v: mib(v)) if fmt == "mib" else fmt.format
        print(f"| {label} | {cell(a)} | {cell(b)} | {b / a:.2f} |")
    ratio = results[large]["e2e"] / results[small]["e2e"]
    print(f"\nupdate cost ratio {large:,} / {small:,} chunks: {ratio:.2f} (target < 1.5)")


if __name__ == "__main__":
    main(sys.argv[1:])
