"""STS-B test split: Spearman correlation of cosine with the gold scores, per precision, and
the per-sentence cosine of each precision's vectors to fp32's (``../shared/data/stsb``)."""

from __future__ import annotations

import argparse
import csv
import gzip
import time

import numpy as np

from bench.common import machine, scifact_dir


def pairs() -> tuple[list[str], list[str], list[float]]:
    path = scifact_dir().parent / "stsb" / "stsbenchmark.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    test = [r for r in rows if r["split"] == "test"]
    return (
        [r["sentence1"] for r in test],
        [r["sentence2"] for r in test],
        [float(r["score"]) for r in test],
    )


def main(argv: list[str]) -> None:
    from scipy.stats import spearmanr

    from embedq.workers.encoding import Embedder

    parser = argparse.ArgumentParser(prog="python -m bench sts")
    parser.add_argument("--precisions", default="fp32,int8", help="comma-separated")
    args = parser.parse_args(argv)
    first, second, gold = pairs()
    print(f"machine: {machine()}; STS-B test pairs: {len(gold)}")
    reference: np.ndarray | None = None
    for name in args.precisions.split(","):
        embedder = Embedder(None, device="cpu", precision=name)
        started = time.perf_counter()
        vectors = embedder.encode_texts(first + second)
        secs = time.perf_counter() - started
        a, b = vectors[: len(gold)], vectors[len(gold) :]
        rho = float(spearmanr((a * b).sum(axis=1), gold)[0])
        reference = vectors if reference is None else reference
        cos = (vectors * reference).sum(axis=1)
        print(
            f"{name:>5}: Spearman {rho:.4f}  cosine to {args.precisions.split(',')[0]}: "
            f"min {cos.min():.4f} mean {cos.mean():.4f}  ({secs:.1f} s)",
            flush=True,
        )
