"""Indexing throughput: plain SentenceTransformer.encode against ``embedq index`` (embedded).

Both run on the same documents in the same run. The baseline truncates each document to the
model's limit (one window); embedq cuts every document into windows, so it also reports
tokens/s, which compares the work actually done.
"""

from __future__ import annotations

import argparse
import json
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


def _indexed_tokens(env: dict[str, str], collection: str) -> int:
    from sqlalchemy import create_engine, text

    from tasks.settings import Settings

    url = env.get("EMBEDQ_DATABASE_URL") or Settings(data_dir=Path(env["EMBEDQ_DATA_DIR"])).db_url
    engine = create_engine(url)
    with engine.connect() as conn:
        tokens = conn.execute(
            text(
                "SELECT SUM(tokens) FROM chunks JOIN collections c ON c.id = chunks.collection_id "
                "WHERE c.name = :name"
            ),
            {"name": collection},
        ).scalar_one()
    engine.dispose()
    return int(tokens)


def timed_index(env: dict[str, str], corpus: Path, *extra: str) -> tuple[float, int]:
    """Seconds for ``embedq index`` of the corpus (after a warm-up run), and tokens embedded."""
    warm = corpus.with_name("warm.jsonl")
    warm.write_text("".join(corpus.read_text().splitlines(keepends=True)[:16]))
    embedq(env, "index", str(warm), "-c", "warm", "-q", *extra)  # schema, model load
    started = time.perf_counter()
    embedq(env, "index", str(corpus), "-c", "bench", "-q", *extra)
    return time.perf_counter() - started, _indexed_tokens(env, "bench")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--docs", type=int, default=300, help="SciFact documents (default 300)")
    parser.add_argument("--full", action="store_true", help="the whole corpus (5,183 documents)")
    parser.add_argument(
        "--no-distributed", action="store_true", help="skip (c): needs Redis and PostgreSQL"
    )
    args = parser.parse_args(argv)
    limit = None if args.full else args.docs
    docs = list(read_jsonl(scifact_dir() / "corpus.jsonl", limit))
    texts = [f"{d['title']} {d['text']}" for d in docs]
    print(f"machine: {machine()}")
    print(f"documents: {len(docs)}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        rows_out = (
            json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) for d in docs
        )
        corpus.write_text("".join(line + "\n" for line in rows_out))
        rows = [("(a) encode", *baseline(texts))]
        rows.append(("(b) embedded", *timed_index(cli_env(Path(tmp) / "b"), corpus)))
        if not args.no_distributed:
            from bench.stack import distributed

            with distributed(Path(tmp) / "c") as env:
                rows.append(("(c) distributed", *timed_index(env, corpus, "--wait")))
    t_base, tok_base = rows[0][1], rows[0][2]
    for name, secs, toks in rows:
        print(
            f"{name:>16}: {len(docs) / secs:7.1f} docs/s {toks / secs:9.0f} tokens/s "
            f"({secs:.1f} s, {toks} tokens)  docs/s vs (a): {t_base / secs:.3f}  "
            f"tokens/s vs (a): {(toks / secs) / (tok_base / t_base):.3f}"
        )
