"""Indexing throughput: plain ``SentenceTransformer.encode`` against ``embedq index``.

All three run on the same documents in the same run, over the same windows: the baseline (a)
cuts each document with embedq's chunker (the collection defaults: the model's limit, an eighth
of overlap) and encodes the window texts with ``SentenceTransformer.encode`` in this process,
model already loaded, batch 32, fp32; (b) is ``embedq index`` on the embedded default and (c)
the distributed path (Redis, PostgreSQL, one embed worker, the index writer), both timed end
to end from the command's start, process start and model load included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import cli_env, embedq, machine, read_jsonl, scalar, scifact_dir


def window_texts(texts: list[str]) -> list[str]:
    """The text of every window embedq cuts the documents into, with the collection defaults."""
    from embedq.workers.encoding import Embedder

    chunker = Embedder(None, device="cpu", precision="fp32").chunker()
    return [
        text[w.start : w.end]
        for text, windows in zip(texts, chunker.split_many(texts), strict=True)
        for w in windows
    ]


def baseline(windows: list[str], device: str = "cpu") -> tuple[float, int]:
    """Seconds for ``SentenceTransformer.encode`` of the windows, and the tokens it embedded."""
    from sentence_transformers import SentenceTransformer

    from embedq.workers.models import resolve_path

    model = SentenceTransformer(resolve_path(None), device=device).float()
    model.encode(windows[:8])
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    limit = model.max_seq_length
    tokens = sum(
        min(len(ids), limit) for ids in model.tokenizer(windows, verbose=False)["input_ids"]
    )
    started = time.perf_counter()
    model.encode(windows, batch_size=32, normalize_embeddings=True)
    return time.perf_counter() - started, tokens


def _indexed_tokens(env: dict[str, str], collection: str) -> int:
    sql = (
        "SELECT SUM(tokens) FROM chunks JOIN collections c ON c.id = chunks.collection_id "
        "WHERE c.name = :name"
    )
    return int(scalar(env, sql, name=collection))


def timed_index(env: dict[str, str], corpus: Path, *extra: str) -> tuple[float, int, float]:
    """Seconds for ``embedq index`` of the corpus, tokens embedded, and the seconds the same
    command takes for a single document (process start, model load: the fixed cost)."""
    lines = corpus.read_text().splitlines(keepends=True)
    warm = corpus.with_name("warm.jsonl")
    warm.write_text("".join(lines[:16]))
    embedq(env, "index", str(warm), "-c", "warm", "-q", *extra)  # schema, page cache
    one = corpus.with_name("one.jsonl")
    one.write_text(lines[0])
    started = time.perf_counter()
    embedq(env, "index", str(one), "-c", "one", "-q", *extra)
    fixed = time.perf_counter() - started
    started = time.perf_counter()
    embedq(env, "index", str(corpus), "-c", "bench", "-q", *extra)
    return time.perf_counter() - started, _indexed_tokens(env, "bench"), fixed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--docs", type=int, default=300, help="SciFact documents (default 300)")
    parser.add_argument("--full", action="store_true", help="the whole corpus (5,183 documents)")
    parser.add_argument(
        "--no-distributed", action="store_true", help="skip (c): needs Redis and PostgreSQL"
    )
    parser.add_argument(
        "--precision", default="fp32", help="EMBEDQ_PRECISION of (b) and (c); (a) is fp32"
    )
    parser.add_argument("--device", default="cpu", help="device of all three (cpu | cuda)")
    parser.add_argument(
        "--case",
        choices=["scifact", "short", "abstracts"],
        default="scifact",
        help="short: 6,000 STS-B sentences; abstracts: 1,500 SciFact abstracts, 150 words; "
        "both whole process against whole process (bench/process.py)",
    )
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of --case")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="EMBEDQ_NAME=VALUE",
        help="a setting for (b) of --case, e.g. EMBEDQ_TASK_TOKENS=8192 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.case != "scifact":
        from bench.process import compare

        compare(args.case, args.precision, args.runs, dict(s.split("=", 1) for s in args.set))
        return
    limit = None if args.full else args.docs
    docs = list(read_jsonl(scifact_dir() / "corpus.jsonl", limit))
    from embedq.storage.documents import embedding_input

    texts = [embedding_input(d["title"], d["text"]) for d in docs]
    print(f"machine: {machine()}")
    print(f"documents: {len(docs)}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        rows_out = (
            json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) for d in docs
        )
        corpus.write_text("".join(line + "\n" for line in rows_out))
        windows = window_texts(texts)
        print(f"windows: {len(windows)}")
        settings = {"EMBEDQ_PRECISION": args.precision, "EMBEDQ_DEVICE": args.device}
        rows = [("(a) encode", *baseline(windows, args.device), 0.0)]
        rows.append(("(b) embedded", *timed_index(cli_env(Path(tmp) / "b", **settings), corpus)))
        if not args.no_distributed:
            from bench.stack import distributed

            with distributed(Path(tmp) / "c", **settings) as env:
                rows.append(("(c) distributed", *timed_index(env, corpus, "--wait")))
    report(rows, len(docs), args.precision)


def report(rows: list[tuple[str, float, int, float]], docs: int, precision: str) -> None:
    """One line per path, and for (b) and (c) the same without their fixed cost."""
    t_base, tok_base = rows[0][1], rows[0][2]
    print(f"(b) and (c) at EMBEDQ_PRECISION={precision}; (a) fp32")
    for name, secs, toks, fixed in rows:
        print(
            f"{name:>16}: {docs / secs:7.1f} docs/s {toks / secs:9.0f} tokens/s "
            f"({secs:.1f} s, {toks} tokens)  docs/s vs (a): {t_base / secs:.3f}  "
            f"tokens/s vs (a): {(toks / secs) / (tok_base / t_base):.3f}"
        )
        if fixed:
            marginal = secs - fixed
            print(
                f"{'':>16}  without the fixed cost of one command ({fixed:.1f} s for one "
                f"document): tokens/s vs (a): {(toks / marginal) / (tok_base / t_base):.3f}"
            )
