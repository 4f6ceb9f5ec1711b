"""Indexing throughput: plain SentenceTransformer.encode against ``embedq index`` (embedded).

Both run on the same documents in the same run. The baseline truncates each document to the
model's limit (one window); embedq cuts every document into windows, so it also reports
tokens/s, which compares the work actually done.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import cli_env, embedq, machine, read_jsonl, scifact_dir


def baseline(texts: list[str]) -> tuple[float, int]:
    from sentence_transformers import SentenceTransformer

    from workers.models import resolve_path

    model = SentenceTransformer(resolve_path(None), device="cpu")
    model.encode(texts[:8])
    tokens = sum(
        min(len(ids), model.max_seq_length)
        for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"]
    )
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return time.perf_counter() - started, tokens


def embedded(corpus: Path, data_dir: Path) -> tuple[float, int]:
    import sqlite3

    env = cli_env(data_dir)
    embedq(env, "index", str(corpus), "-c", "warm", "-q")  # model load and schema, not timed
    started = time.perf_counter()
    embedq(env, "index", str(corpus), "-c", "bench", "-q")
    elapsed = time.perf_counter() - started
    with sqlite3.connect(data_dir / "embedq.db") as db:
        (tokens,) = db.execute(
            "SELECT SUM(tokens) FROM chunks JOIN collections c ON c.id = chunks.collection_id "
            "WHERE c.name = 'bench'"
        ).fetchone()
    return elapsed, int(tokens)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--docs", type=int, default=300, help="SciFact documents (default 300)")
    parser.add_argument("--full", action="store_true", help="the whole corpus (5,183 documents)")
    args = parser.parse_args(argv)
    limit = None if args.full else args.docs
    docs = list(read_jsonl(scifact_dir() / "corpus.jsonl", limit))
    texts = [f"{d['title']} {d['text']}" for d in docs]
    print(f"machine: {machine()}")
    print(f"documents: {len(docs)}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text(
            "".join(
                __import__("json").dumps({"id": d["_id"], "title": d["title"], "text": d["text"]})
                + "\n"
                for d in docs
            )
        )
        t_base, tok_base = baseline(texts)
        t_emb, tok_emb = embedded(corpus, Path(tmp) / "data")
    rows = [("encode (baseline)", t_base, tok_base), ("embedq index", t_emb, tok_emb)]
    for name, secs, toks in rows:
        print(
            f"{name:>18}: {len(docs) / secs:8.1f} docs/s {toks / secs:10.0f} tokens/s "
            f"({secs:.1f} s, {toks} tokens)"
        )
    print(
        f"embedq/baseline docs/s: {t_base / t_emb:.3f}  tokens/s: "
        f"{(tok_emb / t_emb) / (tok_base / t_base):.3f}"
    )
