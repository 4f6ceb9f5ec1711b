"""SciFact retrieval quality through the CLI: index, batch search in each mode, nDCG@10
computed here.

``--long N`` builds the long multi-topic variant first: the corpus shuffled (seed 0) and
joined N abstracts to a document (titles kept as the paragraphs' first lines), and a long
document relevant to a query when one of its abstracts is. Each long document then spans
several windows on unrelated topics, the case where a window's vector and the document's
words disagree most.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cli_env, embedq, machine, read_jsonl, scifact_dir
from embedq.workers.evaluation import evaluate, load_qrels

PUBLISHED_NDCG10 = 0.6451
MODES = ("dense", "sparse", "hybrid")


def long_variant(folder: Path, per_doc: int) -> tuple[Path, dict[str, dict[str, int]]]:
    """Write the joined corpus under ``folder``; return it and the qrels mapped onto it."""
    sci = scifact_dir()
    docs = list(read_jsonl(sci / "corpus.jsonl"))
    random.Random(0).shuffle(docs)
    owner: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for start in range(0, len(docs), per_doc):
        part = docs[start : start + per_doc]
        long_id = f"L{start // per_doc}"
        owner.update({d["_id"]: long_id for d in part})
        text = "\n\n".join(f"{d['title']}\n{d['text']}" for d in part)
        rows.append({"id": long_id, "text": text})
    corpus = folder / f"scifact-long{per_doc}.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    qrels: dict[str, dict[str, int]] = {}
    for query, relevant in load_qrels(sci / "qrels" / "test.tsv").items():
        mapped = qrels.setdefault(query, {})
        for doc, grade in relevant.items():
            if doc in owner:
                mapped[owner[doc]] = max(grade, mapped.get(owner[doc], 0))
    return corpus, qrels


def run_quality(
    data_dir: Path,
    collection: str = "scifact",
    index: bool = True,
    modes: tuple[str, ...] = MODES,
    long: int = 0,
) -> dict[str, dict[str, float]]:
    """Index (unless ``index`` is false), then every mode's measures by name."""
    sci = scifact_dir()
    env = cli_env(data_dir)
    if long:
        corpus, qrels = long_variant(data_dir, long)
    else:
        corpus, qrels = sci / "corpus.jsonl", load_qrels(sci / "qrels" / "test.tsv")
    if index:
        started = time.perf_counter()
        embedq(env, "index", str(corpus), "-c", collection, "-q", "--json")
        print(f"indexed {corpus.name} in {time.perf_counter() - started:.1f} s", flush=True)
    results = {}
    for mode in modes:
        out = embedq(
            env,
            "search",
            collection,
            "--queries",
            str(sci / "queries.jsonl"),
            "-k",
            "100",
            "--mode",
            mode,
            "--json",
        )
        run = {}
        for line in out.splitlines():
            row = json.loads(line)
            run[row["query_id"]] = [h["id"] for h in row["hits"]]
        results[mode] = evaluate(run, qrels)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench quality")
    parser.add_argument("--data-dir", type=Path, help="reuse an index here (default: temporary)")
    parser.add_argument(
        "--mode", choices=[*MODES, "all"], default="all", help="search mode (default: each)"
    )
    parser.add_argument(
        "--long", type=int, default=0, metavar="N", help="join N abstracts to a document"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    modes = MODES if args.mode == "all" else (args.mode,)
    collection = f"scifact-long{args.long}" if args.long else "scifact"
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        reuse = (data_dir / "indexes" / collection).exists()
        results = run_quality(data_dir, collection, not reuse, modes, args.long)
    names = list(next(iter(results.values())))
    print(f"{'mode':>8} " + " ".join(f"{n:>12}" for n in names))
    for mode, scores in results.items():
        print(f"{mode:>8} " + " ".join(f"{scores[n]:12.4f}" for n in names))
    if not args.long:
        best = max(scores["ndcg@10"] for scores in results.values())
        print(f"best nDCG@10 / published dense {PUBLISHED_NDCG10}: {best / PUBLISHED_NDCG10:.3f}")
