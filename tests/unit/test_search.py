"""Candidate selection across the published snapshot and the rows above it."""

from __future__ import annotations

import faiss
import numpy as np

from embedq.tasks.search import _candidates, search_threads


def unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def snapshot(vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    return index


def exact(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, n: int) -> list[list[int]]:
    scores = queries @ vectors.T
    return [ids[np.argsort(-row, kind="stable")[:n]].tolist() for row in scores]


def test_best_of_snapshot_and_tail_per_query(rng: np.random.Generator) -> None:
    snap_vecs, tail_vecs = unit(rng, 300), unit(rng, 40)
    snap_ids, tail_ids = np.arange(300, dtype=np.int64), np.arange(1000, 1040, dtype=np.int64)
    queries = unit(rng, 5)
    found = _candidates(snapshot(snap_vecs, snap_ids), queries, tail_ids, tail_vecs, 32)
    everything = np.vstack([tail_vecs, snap_vecs])
    all_ids = np.concatenate([tail_ids, snap_ids])
    assert len(found) == 5
    want_ids = exact(queries, everything, all_ids, 32)
    for (ids, scores, exhausted), want in zip(found, want_ids, strict=True):
        assert ids.tolist() == want
        assert np.all(np.diff(scores) <= 0)
        assert not exhausted  # 340 rows, 32 taken


def test_exhausted_only_when_nothing_was_cut(rng: np.random.Generator) -> None:
    snap_vecs, tail_vecs = unit(rng, 20), unit(rng, 20)
    index = snapshot(snap_vecs, np.arange(20, dtype=np.int64))
    tail_ids = np.arange(100, 120, dtype=np.int64)
    query = unit(rng, 1)
    ((ids, _, exhausted),) = _candidates(index, query, tail_ids, tail_vecs, 32)
    assert len(ids) == 32 and not exhausted  # each side fits, both together do not
    ((ids, _, exhausted),) = _candidates(index, query, tail_ids, tail_vecs, 40)
    assert len(ids) == 40 and exhausted


def test_no_snapshot_yet_searches_the_tail(rng: np.random.Generator) -> None:
    tail_vecs = unit(rng, 10)
    tail_ids = np.arange(10, dtype=np.int64)
    ((ids, _, exhausted),) = _candidates(None, tail_vecs[3:4], tail_ids, tail_vecs, 32)
    assert ids[0] == 3 and len(ids) == 10 and exhausted


def test_search_threads_is_restored() -> None:
    before = faiss.omp_get_max_threads()
    with search_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with search_threads(0):
        assert faiss.omp_get_max_threads() == before
