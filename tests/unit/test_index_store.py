"""Unit tests for storage.index_store: publishing, loading and verifying FAISS snapshots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from embedq.storage.index_store import (
    CURRENT,
    IndexStore,
    SnapshotCache,
    SnapshotError,
    check_collection_name,
    new_index,
)

DIM = 8
MODEL = "m"


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def filled_index(n: int = 20, seed: int = 0, first_id: int = 1000):
    vectors = unit_vectors(n, seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    index = new_index(DIM)
    index.add_with_ids(vectors, ids)
    return index, vectors, ids


def publish(store: IndexStore, index, watermark: int = 20, name: str = "c"):
    return store.publish(name, index, model=MODEL, factory="Flat", watermark=watermark)


def index_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("index-*.faiss*")}


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(tmp_path / "idx")


def test_publish_then_load_roundtrip(store: IndexStore) -> None:
    index, vectors, ids = filled_index()
    meta = publish(store, index, watermark=42)

    loaded, loaded_meta = store.load("c", model=MODEL, dim=DIM)

    assert loaded_meta == meta
    assert (meta.watermark, meta.count, meta.dim, meta.model) == (42, 20, DIM, MODEL)
    assert meta.file.startswith("index-42-") and meta.file.endswith(".faiss")
    assert loaded.ntotal == 20
    # Every stored vector comes back under its own id, bit for bit.
    for vector, i in zip(vectors, ids, strict=True):
        np.testing.assert_array_equal(loaded.reconstruct(int(i)), vector)
    scores, found = loaded.search(vectors, 1)
    np.testing.assert_array_equal(found[:, 0], ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    # current.json is the commit point and names the published file.
    current = json.loads((store.folder("c") / CURRENT).read_text())
    assert current["file"] == meta.file
    assert current["sha256"] == meta.sha256


def test_meta_is_none_without_snapshot(store: IndexStore) -> None:
    assert store.meta("c") is None
    with pytest.raises(SnapshotError, match="no snapshot"):
        store.load("c", model=MODEL, dim=DIM)


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_damaged_file_fails_checksum(store: IndexStore, damage: str) -> None:
    index, _, _ = filled_index()
    meta = publish(store, index)
    path = store.folder("c") / meta.file
    size = path.stat().st_size
    if damage == "truncate":
        with path.open("r+b") as fh:
            fh.truncate(size // 2)
    else:
        path.write_bytes(b"\x00" * size)

    with pytest.raises(SnapshotError, match="checksum"):
        store.load("c", model=MODEL, dim=DIM)


@pytest.mark.parametrize(("model", "dim"), [("other-model", DIM), (MODEL, DIM * 2)])
def test_model_or_dim_mismatch(store: IndexStore, model: str, dim: int) -> None:
    index, _, _ = filled_index()
    publish(store, index)

    with pytest.raises(SnapshotError, match="built for"):
        store.load("c", model=model, dim=dim)
    # The right model and dimension still load.
    assert store.load("c", model=MODEL, dim=DIM)[0].ntotal == 20


def test_missing_file(store: IndexStore) -> None:
    index, _, _ = filled_index()
    meta = publish(store, index)
    (store.folder("c") / meta.file).unlink()

    with pytest.raises(SnapshotError, match="missing"):
        store.load("c", model=MODEL, dim=DIM)


def test_leftover_tmp_files_are_ignored(store: IndexStore) -> None:
    index, vectors, ids = filled_index()
    meta = publish(store, index)
    folder = store.folder("c")
    # What an interrupted publish leaves behind: a partial index and a partial current.json.
    (folder / "index-99-deadbeef.faiss.tmp").write_bytes(b"partial")
    (folder / (CURRENT + ".tmp")).write_text('{"file": "index-99-dead')

    assert store.meta("c") == meta
    loaded, loaded_meta = store.load("c", model=MODEL, dim=DIM)
    assert loaded_meta == meta
    assert loaded.search(vectors[:1], 1)[1][0, 0] == ids[0]


@pytest.mark.parametrize("step", ["index file", "current.json"])
def test_a_crash_during_publish_leaves_the_previous_snapshot(
    store: IndexStore, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors, ids = filled_index()
    meta = publish(store, index)
    index.add_with_ids(vectors[:1] * 0.5, np.array([10_000], dtype=np.int64))
    real_replace = os.replace

    def crash(src: object, dst: object) -> None:
        # The process dies at this rename: the new file never takes its final name.
        if str(dst).endswith(".faiss" if step == "index file" else CURRENT):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.publish("c", index, model=MODEL, factory="Flat", watermark=meta.watermark + 1)
    monkeypatch.undo()
    assert store.meta("c") == meta
    loaded, loaded_meta = store.load("c", model=MODEL, dim=DIM)
    assert loaded_meta == meta and loaded.ntotal == index.ntotal - 1
    assert loaded.search(vectors[:1], 1)[1][0, 0] == ids[0]


def test_only_newest_two_index_files_remain(store: IndexStore) -> None:
    metas = []
    for round_ in range(3):
        index, _, _ = filled_index(n=5 + round_, seed=round_)
        metas.append(publish(store, index, watermark=10 * (round_ + 1)))
        if round_ == 0:
            (store.folder("c") / "index-5-cafebabe.faiss.tmp").write_bytes(b"partial")

    folder = store.folder("c")
    assert len({m.file for m in metas}) == 3
    # The newest file and the one before it (a reader may still be opening it) are kept.
    assert index_files(folder) == {metas[1].file, metas[2].file}
    loaded, meta = store.load("c", model=MODEL, dim=DIM)
    assert meta == metas[2]
    assert loaded.ntotal == 7


def test_snapshot_cache_reloads_only_after_publish(store: IndexStore) -> None:
    cache = SnapshotCache(store)
    assert cache.get("c", model=MODEL, dim=DIM) is None

    first, _, _ = filled_index(n=4)
    meta1 = publish(store, first, watermark=4)
    index1, got1 = cache.get("c", model=MODEL, dim=DIM)
    again, got_again = cache.get("c", model=MODEL, dim=DIM)
    assert again is index1
    assert got1 == got_again == meta1
    assert index1.ntotal == 4

    second, _, _ = filled_index(n=9, seed=1)
    meta2 = publish(store, second, watermark=9)
    index2, got2 = cache.get("c", model=MODEL, dim=DIM)
    assert index2 is not index1
    assert got2 == meta2
    assert index2.ntotal == 9
    assert cache.get("c", model=MODEL, dim=DIM)[0] is index2


def test_snapshot_cache_ignores_unusable_snapshot(store: IndexStore) -> None:
    index, _, _ = filled_index()
    publish(store, index)
    assert SnapshotCache(store).get("c", model="other-model", dim=DIM) is None


def test_drop_snapshot_removes_the_published_files(store: IndexStore) -> None:
    index, _, _ = filled_index()
    publish(store, index)
    store.drop_snapshot("c")
    assert store.meta("c") is None
    assert not list(store.folder("c").glob("index-*"))


@pytest.mark.parametrize(
    "name", ["../x", "/abs", "a\x00b", "..", "", "a" * 200, "a/b", "x\n", "x..y", ".hidden"]
)
def test_check_collection_name_refuses(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid collection name"):
        check_collection_name(name)
    with pytest.raises(ValueError):
        IndexStore(tmp_path).folder(name)


@pytest.mark.parametrize("name", ["scifact", "my-coll_1.v2", "a" * 128])
def test_check_collection_name_accepts(name: str, tmp_path: Path) -> None:
    assert check_collection_name(name) == name
    assert IndexStore(tmp_path).folder(name) == tmp_path / name
