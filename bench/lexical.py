"""The lexical index on SciFact without the forward pass: the collection's real windows (cut by
the model's tokenizer) or whole documents as BM25 units, through ``search(mode="sparse")``;
nDCG@10, build time and size. Vectors are zeros: only the sparse side is measured."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_runtime, machine, mib, read_jsonl, scifact_dir
from embedq.workers.evaluation import evaluate, load_qrels


def store(rt: Any, name: str, docs: list[dict[str, Any]], whole: bool) -> int:
    """Store SciFact as collection ``name``: windows as the indexer cuts them, or one window
    per document; returns the number of windows."""
    import numpy as np

    from embedq.storage.chunks import EmbeddedDocument, Span, write_chunks
    from embedq.storage.documents import (
        NewDocument,
        content_hash,
        embedding_input,
        upsert_documents,
    )
    from embedq.tasks.collection_setup import CollectionSpec, ensure_collection

    coll = ensure_collection(rt, CollectionSpec(name))
    chunker = rt.embedder(coll.model).chunker(coll.chunk_tokens, coll.overlap)
    total = 0
    for start in range(0, len(docs), 500):
        part = [
            NewDocument(d["_id"], d["text"], d.get("title") or None)
            for d in docs[start : start + 500]
        ]
        with rt.sessions.begin() as session:
            ids = upsert_documents(session, coll.id, part)
        inputs = [embedding_input(d.title, d.text) for d in part]
        if whole:
            spans = [[Span(0, 0, len(text), 0)] for text in inputs]
        else:
            spans = [
                [Span(w.number, w.start, w.end, w.tokens) for w in ws]
                for ws in chunker.split_many(inputs)
            ]
        rows = [
            EmbeddedDocument(
                doc_id,
                content_hash(d.title, d.text),
                s,
                np.zeros((len(s), coll.dim), dtype=np.float32),
            )
            for doc_id, d, s in zip(ids, part, spans, strict=True)
        ]
        with rt.sessions.begin() as session:
            write_chunks(session, coll.id, rows)
        total += sum(len(s) for s in spans)
    return total


def run(root: Path) -> None:
    from sqlalchemy import select

    from embedq.storage.models import Collection
    from embedq.tasks.search import SearchOptions, search

    sci = scifact_dir()
    docs = list(read_jsonl(sci / "corpus.jsonl"))
    queries = list(read_jsonl(sci / "queries.jsonl"))
    qrels = load_qrels(sci / "qrels" / "test.tsv")
    rt = bench_runtime(root)
    print("| BM25 units | units | build s | size | nDCG@10 | recall@100 | 300 queries s |")
    print("|---|---|---|---|---|---|---|")
    for name, whole in (("windows", False), ("documents", True)):
        units = store(rt, name, docs, whole)
        with rt.sessions() as session:
            coll = session.scalars(select(Collection).where(Collection.name == name)).one()
            started = time.perf_counter()
            rt.lexical.catch_up(session, coll, coll.seq)
            build = time.perf_counter() - started
        started = time.perf_counter()
        hits = search(rt, name, [q["text"] for q in queries], 100, SearchOptions(mode="sparse"))
        took = time.perf_counter() - started
        run_ = {str(q["_id"]): [h.id for h in hs] for q, hs in zip(queries, hits, strict=True)}
        scores = evaluate(run_, qrels)
        print(
            f"| {name} | {units:,} | {build:.1f} | {mib(rt.lexical.size(name))} | "
            f"{scores['ndcg@10']:.4f} | {scores['recall@100']:.4f} | {took:.1f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench lexical", description=__doc__)
    parser.parse_args(argv)
    print(f"machine: {machine()}")
    root = Path(tempfile.mkdtemp(prefix="embedq-bench-lexical-"))
    try:
        run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
