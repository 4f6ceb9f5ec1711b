"""Whole process against whole process: ``embedq index`` of a corpus against a fresh Python
process that loads ``SentenceTransformer`` and encodes the same texts (fp32, batch 64).

Two corpora, as a user meets them:

- ``short``: 6,000 STS-B sentences (train split, first sentence of each pair, then the
  second, in file order; about 12 tokens each), one document each;
- ``abstracts``: 1,500 SciFact abstracts cut to their first 150 words.

Both commands are timed from process start to exit (imports, model load, writes included),
alternating (a) and (b), ``--runs`` times; the medians and their ratio are printed. Each
``embedq index`` run writes into a new data folder.

    python -m bench throughput --case short                        # fp32, target >= 0.95
    python -m bench throughput --case abstracts --precision int8   # target >= 1.8
"""

from __future__ import annotations

import csv
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cli_env, machine, read_jsonl, scifact_dir

BASELINE = """
import sys
from sentence_transformers import SentenceTransformer
from embedq.workers.models import resolve_path
texts = open(sys.argv[1], encoding="utf-8").read().split("\\n")
model = SentenceTransformer(resolve_path(None), device="cpu").float()
vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
print(len(vectors))
"""


def short_texts(count: int = 6_000) -> list[str]:
    path = scifact_dir().parent / "stsb" / "stsbenchmark.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    train = [r for r in rows if r["split"] == "train"]
    sentences = [r["sentence1"] for r in train] + [r["sentence2"] for r in train]
    return [" ".join(s.split()) for s in sentences][:count]


def abstracts(count: int = 1_500, words: int = 150) -> list[str]:
    docs = read_jsonl(scifact_dir() / "corpus.jsonl", count)
    return [" ".join(d["text"].split()[:words]) for d in docs]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return seconds


def compare(case: str, precision: str, runs: int, settings: dict[str, str]) -> None:
    texts = short_texts() if case == "short" else abstracts()
    print(f"machine: {machine()}")
    print(f"case: {case}, {len(texts)} texts; (a) fp32 batch 64; (b) EMBEDQ_PRECISION={precision}")
    if settings:
        print(f"(b) settings: {settings}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = folder / "texts.txt"
        plain.write_text("\n".join(texts), encoding="utf-8")
        corpus = folder / "corpus.jsonl"
        corpus.write_text(
            "".join(json.dumps({"id": f"t{n}", "text": t}) + "\n" for n, t in enumerate(texts)),
            encoding="utf-8",
        )
        base_env = cli_env(folder / "unused", EMBEDQ_DEVICE="cpu")
        a_cmd = [sys.executable, "-c", BASELINE, str(plain)]
        seconds: dict[str, list[float]] = {"a": [], "b": []}
        # Page cache, compiled bytecode, and the ONNX copy of the model made once on first use.
        _timed(a_cmd, base_env)
        warm = folder / "warm.jsonl"
        warm.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(True)[:16]))
        warm_env = cli_env(folder / "warm", EMBEDQ_PRECISION=precision, EMBEDQ_DEVICE="cpu")
        _timed(
            [sys.executable, "-m", "embedq.api.cli", "index", str(warm), "-c", "w", "-q"], warm_env
        )
        for run in range(runs):
            seconds["a"].append(_timed(a_cmd, base_env))
            env = cli_env(
                folder / f"b{run}", EMBEDQ_PRECISION=precision, EMBEDQ_DEVICE="cpu", **settings
            )
            b_cmd = [sys.executable, "-m", "embedq.api.cli", "index", str(corpus), "-c", "b", "-q"]
            seconds["b"].append(_timed(b_cmd, env))
            print(f"run {run + 1}: (a) {seconds['a'][-1]:.1f} s  (b) {seconds['b'][-1]:.1f} s")
    a, b = statistics.median(seconds["a"]), statistics.median(seconds["b"])
    print(f"(a) SentenceTransformer.encode, whole process: median {a:.1f} s")
    print(f"(b) embedq index at {precision}, whole process: median {b:.1f} s")
    print(f"speed of (b) vs (a): {a / b:.3f}")
