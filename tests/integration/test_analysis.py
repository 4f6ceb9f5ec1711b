"""The analysis jobs through the CLI on the embedded default, with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedq.storage.exports import read_projector
from tests.integration.conftest import ROOT, ok_json, write_jsonl

DEMO = ROOT / "demo" / "corpus.jsonl"
TOPICS = ("astro", "cook", "rail")


@pytest.fixture()
def planted(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A collection of 3 topics x 12 short documents from the sample corpus."""
    docs = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]
    chosen = [d for t in TOPICS for d in [x for x in docs if x["id"].startswith(f"{t}-0")][:12]]
    assert len(chosen) == 36
    job = ok_json(
        env, "index", str(write_jsonl(tmp_path / "p.jsonl", chosen)), "-c", "p", "--json", "-q"
    )
    assert job["status"] == "succeeded"
    return env


def test_embed_strategies_give_vectors_in_input_order(env: dict[str, str]) -> None:
    texts = ["A cat sleeps on the sofa.", "Stock markets fell sharply today.", "Kittens nap a lot."]
    args = [a for t in texts for a in ("--text", t)]
    out = ok_json(env, "embed", *args, "--json")
    assert (out["dim"], out["strategy"]) == (384, "sentence-transformers")
    vecs = np.asarray(out["vectors"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[2] > vecs[0] @ vecs[1]
    for strategy in ("cls", "mean", "second-to-last", "pooler"):
        other = np.asarray(
            ok_json(env, "embed", *args, "--strategy", strategy, "--json")["vectors"]
        )
        assert other.shape == (3, 384) and not np.allclose(other, vecs)


def test_classify_with_the_embedding_backend(env: dict[str, str]) -> None:
    out = ok_json(
        env,
        "classify",
        "--text",
        "The striker scored twice in the cup final.",
        "--text",
        "Knead the dough and bake it at 220 degrees.",
        "--labels",
        "sports,cooking,astronomy",
        "--json",
    )
    firsts = [r["labels"][0]["label"] for r in out["results"]]
    assert firsts == ["sports", "cooking"]
    for row in out["results"]:
        assert abs(sum(x["score"] for x in row["labels"]) - 1) < 1e-4


def test_words_compare_the_same_word_in_different_senses(env: dict[str, str]) -> None:
    sentence = (
        "The bank approved my loan, and the bank also holds my savings, "
        "but the muddy bank of the river flooded."
    )
    out = ok_json(env, "words", sentence, "--json")
    (bank,) = [r for r in out["repeated"] if r["word"] == "bank"]
    cos = np.asarray(bank["cosine"])
    assert cos.shape == (3, 3)
    assert cos[0, 1] > cos[0, 2] and cos[0, 1] > cos[1, 2]
    for w in out["words"]:
        assert sentence[w["start"] : w["end"]] == w["word"]


def test_cluster_recovers_the_planted_topics(planted: dict[str, str], tmp_path: Path) -> None:
    plot = tmp_path / "clusters.png"
    out = ok_json(planted, "cluster", "p", "--k-range", "2-6", "--plot", str(plot), "--json")
    assert out["k"] == 3
    groups: dict[int, set[str]] = {}
    for doc, label in out["assignments"].items():
        groups.setdefault(label, set()).add(doc.split("-")[0])
    assert sorted(len(g) for g in groups.values()) == [1, 1, 1]
    assert sorted(c["size"] for c in out["clusters"]) == [12, 12, 12]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_projector_export_loads_back_to_the_document_vectors(
    planted: dict[str, str], tmp_path: Path
) -> None:
    out = ok_json(planted, "export", "projector", "p", str(tmp_path / "proj"), "--json")
    assert out["count"] == 36
    vectors, meta = read_projector(tmp_path / "proj")
    header = (tmp_path / "proj" / "meta.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "id\ttitle" and len(meta) == 36
    assert vectors.shape == (36, 384)
    # The same vectors as the collection's document vectors from an embed job.
    from embedq.tasks.analysis import run_embed
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    rt = Runtime(Settings(data_dir=Path(planted["EMBEDQ_DATA_DIR"])))
    result = run_embed(rt, "check", {"collection": "p"})
    order = {i: n for n, i in enumerate(result["ids"])}
    mine = np.asarray(result["vectors"], dtype=np.float32)[[order[r[0]] for r in meta]]
    np.testing.assert_array_equal(vectors, mine)


@pytest.mark.slow
def test_sts_benchmark_matches_the_published_figure(env: dict[str, str], shared_data: Path) -> None:
    out = ok_json(env, "eval", "sts", str(shared_data / "stsb" / "stsbenchmark.tsv.gz"), "--json")
    assert out["pairs"] == 1379
    assert abs(out["spearman"] - 0.8203) <= 0.005, out
