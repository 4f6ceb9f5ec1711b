"""Retrieval quality on SciFact through the CLI: nDCG@10 of each search mode, the same figures
from ``embedq eval beir``, and an IVF index rebuilt from the stored vectors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.quality import run_quality
from tests.integration.conftest import clean_env, embedq, ok_json

LEVELS = {"dense": 0.640, "sparse": 0.670, "hybrid": 0.710}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_scifact_ndcg_through_the_cli(tmp_path: Path, shared_data: Path) -> None:
    assert (shared_data / "scifact" / "corpus.jsonl").exists()
    data = tmp_path / "data"
    scores = run_quality(data, modes=tuple(LEVELS))
    for mode in LEVELS:
        assert scores[mode]["queries"] == 300
        # Dense: published 0.6451 with truncation at 256 tokens; windows do at least as well.
        assert scores[mode]["ndcg@10"] >= LEVELS[mode], (mode, scores[mode])
        assert scores[mode]["recall@100"] > scores[mode]["recall@10"] > 0.7
    assert scores["hybrid"]["ndcg@10"] > max(
        scores["dense"]["ndcg@10"], scores["sparse"]["ndcg@10"]
    )

    # The same through `embedq eval beir` (the collection is already indexed: no new work).
    env = clean_env(EMBEDQ_DATA_DIR=str(data))
    out = ok_json(
        env, "eval", "beir", str(shared_data / "scifact"), "--collection", "scifact", "--json"
    )
    for mode in LEVELS:
        assert abs(out["modes"][mode]["ndcg@10"] - scores[mode]["ndcg@10"]) < 1e-3, out

    # IVF64 from the stored vectors, no forward pass: top-10 documents overlap the exact ones.
    queries = str(shared_data / "scifact" / "queries.jsonl")

    def top10() -> list[list[str]]:
        proc = embedq(env, "search", "scifact", "--queries", queries, "--mode", "dense", "--json")
        assert proc.returncode == 0, proc.stderr
        return [[h["id"] for h in json.loads(line)["hits"]] for line in proc.stdout.splitlines()]

    exact = top10()
    started = time.perf_counter()
    done = ok_json(env, "collections", "reindex", "scifact", "--index", "IVF64,Flat", "--json")
    assert time.perf_counter() - started < 120 and done["index"] == "IVF64,Flat"
    approx = top10()
    overlap = sum(len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)) / 300
    assert overlap >= 0.95, overlap


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_hybrid_beats_both_parts_on_long_multi_topic_documents(
    tmp_path: Path, shared_data: Path
) -> None:
    """SciFact joined eight abstracts to a document (bench/quality.py ``--long``): windows
    straddle unrelated topics, and fusing still beats each side."""
    assert (shared_data / "scifact" / "corpus.jsonl").exists()
    data = tmp_path / "data"
    data.mkdir()
    scores = run_quality(data, "long", modes=tuple(LEVELS), long=8)
    ndcg = {mode: scores[mode]["ndcg@10"] for mode in LEVELS}
    assert ndcg["hybrid"] > max(ndcg["dense"], ndcg["sparse"]) + 0.02, ndcg
    assert ndcg["sparse"] >= 0.64 and ndcg["dense"] >= 0.58, ndcg
