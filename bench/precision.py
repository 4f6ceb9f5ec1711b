"""Precision: embedq's encoder at each precision against plain ``SentenceTransformer.encode``.

In one process, on the same SciFact windows (the collection defaults): (a) the baseline,
``SentenceTransformer.encode`` in fp32, batch 32; then ``Embedder.encode_ids`` (token-budget,
length-sorted batches) at fp32 and at each lower precision the device runs. Prints tokens/s,
the ratio to (a), and the cosine of every window's vector to the fp32 one. With ``--quality``
it also ranks SciFact (all windows, best window per document, exact search) at each precision
and prints nDCG@10, so that a lower precision can be checked against fp32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import machine, read_jsonl, scifact_dir
from bench.throughput import baseline
from embedq.workers.encoding import Embedder
from embedq.workers.evaluation import evaluate, load_qrels
from embedq.workers.models import choose_device, cpu_has_native_bf16, precision_name


def embedding_input(title: str | None, text: str) -> str:
    """The string embedq embeds (storage.documents.embedding_input, without its imports)."""
    return f"{title} {text}" if title else text


def precisions(device: str, every: bool) -> list[str]:
    """fp32, then what ``auto`` picks, int8 on CPUs, then (with ``every``) the rest the device
    can run."""
    wanted = ["fp32", precision_name(device, "auto")]
    if device == "cpu":
        wanted.append("int8")
    if every:
        wanted += ["bf16", "fp16"] if device.startswith("cuda") else ["bf16"]
    return list(dict.fromkeys(wanted))


def windows_of(
    embedder: Embedder, texts: Sequence[str]
) -> tuple[list[list[int]], list[int], list[str]]:
    """Every window's token ids, the document each belongs to, and the text it covers."""
    ids: list[list[int]] = []
    owner: list[int] = []
    covered: list[str] = []
    for n, windows in enumerate(embedder.chunker().split_many(list(texts))):
        ids.extend(w.input_ids for w in windows)
        owner.extend([n] * len(windows))
        covered.extend(texts[n][w.start : w.end] for w in windows)
    return ids, owner, covered


def timed_encode(embedder: Embedder, ids: list[list[int]]) -> tuple[np.ndarray, float]:
    embedder.encode_ids(ids[:16])
    if embedder.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    started = time.perf_counter()
    vectors = embedder.encode_ids(ids)
    return vectors, time.perf_counter() - started


def ndcg(embedder: Embedder, vectors: np.ndarray, owner: list[int], doc_ids: list[str]) -> float:
    """SciFact nDCG@10 with each document scored by its best window."""
    sci = scifact_dir()
    qrels = load_qrels(sci / "qrels" / "test.tsv")
    queries = {q["_id"]: q["text"] for q in read_jsonl(sci / "queries.jsonl") if q["_id"] in qrels}
    qids = list(queries)
    qv = embedder.encode_texts([queries[q] for q in qids])
    scores = qv @ vectors.T
    best = np.full((len(qids), len(doc_ids)), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, np.asarray(owner), scores.T)
    top = np.argsort(-best, axis=1)[:, :100]
    run = {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(qids)}
    return evaluate(run, qrels)["ndcg@10"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench precision")
    parser.add_argument("--docs", type=int, default=300, help="SciFact documents (default 300)")
    parser.add_argument("--full", action="store_true", help="the whole corpus, with --quality")
    parser.add_argument("--quality", action="store_true", help="SciFact nDCG@10 per precision")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--every", action="store_true", help="also precisions auto skips")
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    docs = list(read_jsonl(scifact_dir() / "corpus.jsonl", None if args.full else args.docs))
    texts = [embedding_input(d["title"], d["text"]) for d in docs]
    print(f"machine: {machine()}; native bf16 on CPU: {cpu_has_native_bf16()}")
    fp32 = Embedder(None, device=device, precision="fp32")
    started = time.perf_counter()
    ids, owner, covered = windows_of(fp32, texts)
    split_s = time.perf_counter() - started
    tokens = sum(len(w) for w in ids)
    base_s, base_tokens = baseline(covered, device)
    print(f"documents: {len(docs)}, windows: {len(ids)}, tokens: {tokens}, device: {device}")
    # Not in the embedq rows below: the pipeline cuts the next batch during the forward pass.
    print(f"{'tokenising + windows':>22}: {tokens / split_s:9.0f} tokens/s ({split_s:.1f} s, CPU)")
    print(f"{'(a) ST encode fp32':>22}: {base_tokens / base_s:9.0f} tokens/s ({base_s:.1f} s)")
    reference: np.ndarray | None = None
    results: dict[str, Any] = {}
    runs = precisions(device, args.every or args.full)
    if device == "cpu" and type(fp32.backend).__name__ == "OnnxBackend":
        runs.insert(1, "fp32 torch")  # the other CPU engine at fp32, for the backend choice
    for name in runs:
        if name == "fp32":
            embedder = fp32
        elif name == "fp32 torch":
            embedder = Embedder(None, device=device, precision="fp32", engine="torch")
        else:
            embedder = Embedder(None, device=device, precision=name)
        vectors, secs = timed_encode(embedder, ids)
        reference = vectors if reference is None else reference
        cos = np.sum(vectors * reference, axis=1)
        line = (
            f"{'embedq ' + name:>22}: {tokens / secs:9.0f} tokens/s ({secs:.1f} s)  vs (a): "
            f"{(tokens / secs) / (base_tokens / base_s):.3f}  cosine to fp32: "
            f"min {cos.min():.6f} mean {cos.mean():.6f}"
        )
        if args.quality or args.full:
            score = ndcg(embedder, vectors, owner, [d["_id"] for d in docs])
            results[name] = score
            line += f"  nDCG@10 {score:.4f}"
            if name != "fp32":
                line += f" ({score - results['fp32']:+.4f} vs fp32)"
        print(line, flush=True)
