"""Unit tests for workers.evaluation: retrieval metrics on hand-computed examples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from embedq.workers.evaluation import evaluate, load_qrels, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_single_relevant_at_rank_two() -> None:
    assert ndcg_at_k(["x", "d"], {"d": 1}) == pytest.approx(1 / math.log2(3))


def test_ndcg_perfect_and_empty() -> None:
    assert ndcg_at_k(["d", "x"], {"d": 1}) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"d": 1}) == 0.0
    assert ndcg_at_k([], {"d": 1}) == 0.0
    # No positive judgement: no ideal ranking, the score is zero rather than a division error.
    assert ndcg_at_k(["d"], {"d": 0}) == 0.0


def test_ndcg_cuts_at_k() -> None:
    ranked = [f"x{i}" for i in range(10)] + ["d"]
    assert ndcg_at_k(ranked, {"d": 1}, k=10) == 0.0
    assert ndcg_at_k(ranked, {"d": 1}, k=11) == pytest.approx(1 / math.log2(12))


def test_ndcg_graded_relevance() -> None:
    relevant = {"a": 2, "b": 1, "c": 0}
    # Ranked b, a: DCG = 1/log2(2) + 2/log2(3); ideal a, b: 2/log2(2) + 1/log2(3).
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], relevant) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], relevant) == pytest.approx(1.0)
    # A zero-graded document adds nothing; the ideal is cut at k.
    assert ndcg_at_k(["c", "a"], relevant, k=1) == 0.0
    assert ndcg_at_k(["a", "c"], relevant, k=1) == pytest.approx(1.0)
    # Linear gains: grade 2 counts twice grade 1 (an exponential gain would give 3).
    two_grades = {"a": 2, "b": 1}
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["b", "x", "a"], two_grades) == pytest.approx(dcg / ideal)


def test_mrr() -> None:
    assert mrr_at_k(["d"], {"d": 1}) == 1.0
    assert mrr_at_k(["x", "y", "d", "e"], {"d": 1, "e": 2}) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "d"], {"d": 0}) == 0.0
    ranked = [f"x{i}" for i in range(10)] + ["d"]
    assert mrr_at_k(ranked, {"d": 1}, k=10) == 0.0
    assert mrr_at_k(ranked, {"d": 1}, k=11) == pytest.approx(1 / 11)


def test_recall() -> None:
    relevant = {"a": 1, "b": 2, "c": 1, "z": 0}
    assert recall_at_k(["a", "x", "b"], relevant, 3) == pytest.approx(2 / 3)
    assert recall_at_k(["a", "x", "b"], relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c", "z"], relevant, 10) == 1.0
    assert recall_at_k(["z"], relevant, 10) == 0.0
    assert recall_at_k(["a"], {"a": 0}, 10) == 0.0


def test_evaluate_means_over_judged_queries() -> None:
    qrels = {
        "q1": {"d1": 1},
        "q2": {"d2": 1, "d3": 1},
        "q3": {"d4": 1},  # judged but missing from the run: counts as zero
        "q4": {"d5": 0},  # no positive judgement: ignored
    }
    run = {
        "q1": ["d1", "x"],
        "q2": ["x", "d2"] + [f"y{i}" for i in range(20)] + ["d3"],
        "q4": ["d5"],
        "q5": ["d9"],  # not judged at all: ignored
    }
    out = evaluate(run, qrels)

    q2_ndcg = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert out["queries"] == 3.0
    assert out["ndcg@10"] == pytest.approx((1.0 + q2_ndcg + 0.0) / 3)
    assert out["mrr@10"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert out["recall@10"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert out["recall@100"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert set(out) == {"ndcg@10", "mrr@10", "recall@10", "recall@100", "queries"}


def test_evaluate_without_judged_queries() -> None:
    with pytest.raises(ValueError, match="no judged queries"):
        evaluate({"q": ["d"]}, {"q": {"d": 0}})


def test_load_qrels(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td3\t0\nshort\trow\nq3\td4\t1.0\n",
        encoding="utf-8",
    )
    assert load_qrels(path) == {
        "q1": {"d1": 1, "d2": 2},
        "q2": {"d3": 0},
        "q3": {"d4": 1},
    }


def test_load_qrels_header_only_and_empty(tmp_path: Path) -> None:
    header_only = tmp_path / "h.tsv"
    header_only.write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    empty = tmp_path / "e.tsv"
    empty.write_text("", encoding="utf-8")
    assert load_qrels(header_only) == {}
    assert load_qrels(empty) == {}
