"""Clustering on planted groups: well-separated Gaussian blobs on the unit sphere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from embedq.workers.clustering import (
    ClusterResult,
    agglomerative,
    choose_k,
    kmeans,
    project_2d,
    scatter_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _blobs(n: int, k: int, dim: int = 32, spread: float = 0.05, seed: int = 0):
    """``n`` unit rows in ``k`` tight groups around random directions, and the true groups."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.permutation(np.arange(n) % k)
    rows = centres[truth] + spread * rng.standard_normal((n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), truth


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    return _blobs(300, 4)


def _check_result(result: ClusterResult, rows: np.ndarray) -> None:
    assert result.labels.dtype == np.int64 and result.labels.shape == (rows.shape[0],)
    assert result.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-5)
    assert sum(result.sizes) == rows.shape[0]
    assert result.sizes == np.bincount(result.labels, minlength=result.k).tolist()


def test_kmeans_recovers_planted_groups(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, truth = planted
    result = kmeans(rows, 4, seed=0)
    _check_result(result, rows)
    assert result.k == 4 and sorted(result.sizes) == [75, 75, 75, 75]
    assert adjusted_rand_score(truth, result.labels) == 1.0
    # Labels are the nearest centroid by cosine.
    assert np.array_equal(result.labels, np.argmax(rows @ result.centroids.T, axis=1))


def test_kmeans_on_many_rows_trains_on_a_sample() -> None:
    # 40,000 rows, FAISS trains on 6 * 256 of them; every row is then assigned.
    rows, truth = _blobs(40_000, 6, seed=5)
    result = kmeans(rows, 6)
    assert adjusted_rand_score(truth, result.labels) > 0.99
    assert sorted(result.sizes) == [6666] * 2 + [6667] * 4


def test_kmeans_rejects_bad_k(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = planted
    with pytest.raises(ValueError, match="k must be"):
        kmeans(rows, 0)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(rows[:3], 4)
    with pytest.raises(ValueError, match="matrix"):
        kmeans(rows[0], 2)


def test_choose_k_finds_four(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = planted
    best, scores = choose_k(rows, 2, 8, sample=200, seed=0)
    assert best == 4
    assert sorted(scores) == list(range(2, 9))
    assert scores[4] == max(scores.values()) and scores[4] > 0.5
    assert all(-1.0 <= s <= 1.0 for s in scores.values())
    with pytest.raises(ValueError, match="k_min"):
        choose_k(rows, 1, 3)


def test_agglomerative_finds_four(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, truth = planted
    result = agglomerative(rows, 0.5)
    _check_result(result, rows)
    assert result.k == 4
    assert adjusted_rand_score(truth, result.labels) == 1.0
    # A tight threshold splits the groups further.
    assert agglomerative(rows, 0.05, linkage="complete").k > 4


def test_agglomerative_refuses_too_many_rows(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = planted
    with pytest.raises(ValueError, match=r"300 rows.*kmeans"):
        agglomerative(rows, 0.5, max_rows=299)
    with pytest.raises(ValueError, match="linkage"):
        agglomerative(rows, 0.5, linkage="ward")


def test_examples_are_nearest_members(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = planted
    result = kmeans(rows, 4)
    ids = [f"doc-{i}" for i in range(rows.shape[0])]
    examples = result.examples(ids, n=5)
    assert len(examples) == 4
    for c, chosen in enumerate(examples):
        members = np.flatnonzero(result.labels == c)
        sims = rows[members] @ result.centroids[c]
        expected = [ids[i] for i in members[np.argsort(-sims, kind="stable")[:5]]]
        assert chosen == expected
    summary = result.to_dict(np.arange(rows.shape[0]), n_examples=2)
    json.dumps(summary)
    assert summary["k"] == 4 and len(summary["assignments"]) == rows.shape[0]
    assert [c["size"] for c in summary["clusters"]] == result.sizes
    for c, cluster in enumerate(summary["clusters"]):
        assert [e["id"] for e in cluster["examples"]] == [
            int(x.split("-")[1]) for x in examples[c][:2]
        ]
    with pytest.raises(ValueError, match="ids"):
        result.examples(ids[:-1])


def test_project_2d_is_pca(planted: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = planted
    points = project_2d(rows)
    assert points.shape == (rows.shape[0], 2) and points.dtype == np.float32
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    signs = np.sign(np.sum(reference * points, axis=0))
    np.testing.assert_allclose(points, reference * signs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points, axis=0), s[:2], rtol=1e-5)
    # Fitted on a sample, still a projection of every row.
    assert project_2d(rows, sample=50, seed=1).shape == (rows.shape[0], 2)


@pytest.mark.parametrize("k", [4, 25])
def test_scatter_png_writes_a_png(tmp_path: Path, k: int) -> None:
    rows, _ = _blobs(400, k, seed=k)
    result = kmeans(rows, k)
    path = scatter_png(project_2d(rows), result.labels, tmp_path / "clusters.png", f"k={k}")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["clusters.png"]
    with pytest.raises(ValueError, match="points"):
        scatter_png(rows, result.labels, tmp_path / "bad.png", "bad")
