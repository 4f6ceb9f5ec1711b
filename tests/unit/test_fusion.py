"""Fusing dense and lexical rankings."""

from __future__ import annotations

import pytest

from embedq.tasks.fusion import min_max, mix, rrf


def test_min_max_maps_onto_unit_interval() -> None:
    assert min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert min_max([5.0, 5.0]) == [1.0, 1.0]
    assert min_max([]) == []


def test_mix_weighs_normalised_scores_and_counts_absence_as_zero() -> None:
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    sparse = [("c", 30.0), ("d", 10.0)]
    fused = dict(mix(dense, sparse, alpha=0.5))
    assert fused["a"] == pytest.approx(0.5)  # top dense, absent from sparse
    assert fused["c"] == pytest.approx(0.5)  # bottom dense (0), top sparse (1)
    assert fused["b"] == pytest.approx(0.25)
    assert fused["d"] == pytest.approx(0.0)
    assert [k for k, _ in mix(dense, sparse, alpha=1.0)][:3] == ["a", "b", "c"]
    assert mix(dense, sparse, alpha=0.0)[0][0] == "c"


def test_mix_rewards_agreement() -> None:
    dense = [("x", 1.0), ("both", 0.9), ("y", 0.0)]
    sparse = [("z", 10.0), ("both", 9.0), ("w", 0.0)]
    assert mix(dense, sparse)[0][0] == "both"


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([("a", 9.0), ("b", 1.0)], [("b", 0.3), ("c", 0.2)], k=60)
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert fused[0][0] == "b"
