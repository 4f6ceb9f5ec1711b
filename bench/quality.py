"""SciFact retrieval quality through the CLI: index, batch search, nDCG@10 computed here."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import cli_env, embedq, machine, scifact_dir
from workers.evaluation import evaluate, load_qrels

PUBLISHED_NDCG10 = 0.6451


def run_quality(
    data_dir: Path, collection: str = "scifact", index: bool = True
) -> dict[str, float]:
    sci = scifact_dir()
    env = cli_env(data_dir)
    if index:
        started = time.perf_counter()
        embedq(env, "index", str(sci / "corpus.jsonl"), "-c", collection, "-q", "--json")
        print(f"indexed SciFact in {time.perf_counter() - started:.1f} s")
    out = embedq(
        env, "search", collection, "--queries", str(sci / "queries.jsonl"), "-k", "100", "--json"
    )
    run = {}
    for line in out.splitlines():
        row = json.loads(line)
        run[row["query_id"]] = [h["id"] for h in row["hits"]]
    return evaluate(run, load_qrels(sci / "qrels" / "test.tsv"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench quality")
    parser.add_argument("--data-dir", type=Path, help="reuse an index here (default: temporary)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        reuse = (data_dir / "indexes" / "scifact").exists()
        scores = run_quality(data_dir, index=not reuse)
    for name, value in scores.items():
        print(f"{name:>11}: {value:.4f}")
    print(f"nDCG@10 / published {PUBLISHED_NDCG10}: {scores['ndcg@10'] / PUBLISHED_NDCG10:.3f}")
