"""The publish policy of the index writer and the reader's incremental tail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import faiss
import numpy as np
import pytest
from sqlalchemy import select

import embedq.storage.catchup as catchup
from embedq.storage.catchup import IndexWriter, PublishPolicy
from embedq.storage.db import transaction
from embedq.storage.documents import delete_document
from embedq.storage.index_store import IndexStore, SnapshotCache, SnapshotMeta, Tail
from embedq.storage.jobs import add_batches, create_job, mark_running, settle_batch
from embedq.storage.models import SEQ_BITS, Chunk
from tests.unit.test_storage import (
    MODEL,
    Sessions,
    chunk_rows,
    collection_seq,
    index_ids,
    index_texts,
    make_collection,
    tombstones,
)

DIM = 8


def meta(watermark: int, count: int) -> SnapshotMeta:
    return SnapshotMeta("f", "s", MODEL, DIM, "cosine", "Flat", watermark, count, "t")


def texts(prefix: str, n: int) -> dict[str, str]:
    return {f"{prefix}{i}": f"text {prefix} {i}" for i in range(n)}


# --- the policy ----------------------------------------------------------------------------


def test_policy_first_snapshot_is_due_once_there_are_rows() -> None:
    policy = PublishPolicy(rows=100, fraction=0.1, interval_s=60)
    assert not policy.due(None, 0)
    assert policy.due(None, 1)


def test_policy_rows_fraction_and_small_indexes() -> None:
    policy = PublishPolicy(rows=100, fraction=0.1, interval_s=60)
    assert not policy.due(meta(50, 50), 50)  # nothing new
    assert policy.due(meta(50, 50), 60)  # whole index no bigger than ``rows``
    big = meta(10_000, 10_000)
    assert not policy.due(big, 10_000 + 999)  # below 10 % of the snapshot
    assert policy.due(big, 10_000 + 1000)
    small_fraction = PublishPolicy(rows=100, fraction=0.001, interval_s=60)
    assert not small_fraction.due(big, 10_000 + 99)  # ``rows`` is the floor
    assert small_fraction.due(big, 10_000 + 100)


def test_policy_waits_for_the_end_of_a_job_on_a_small_index() -> None:
    policy = PublishPolicy(rows=100, fraction=0.1, interval_s=60)
    assert not policy.due(None, 50, busy=True)  # a first snapshot, while a job embeds
    assert policy.due(None, 100, busy=True)  # ... unless the rows that wait are many
    assert not policy.due(meta(50, 50), 60, busy=True)
    assert policy.due(meta(50, 50), 60, busy=False)
    now = datetime.now(UTC)
    assert policy.due(meta(50, 50), 60, now - timedelta(seconds=60), now, busy=True)


def test_policy_interval() -> None:
    policy = PublishPolicy(rows=100, fraction=0.1, interval_s=60)
    big = meta(10_000, 10_000)
    now = datetime.now(UTC)
    assert not policy.due(big, 10_001, now - timedelta(seconds=59), now)
    assert policy.due(big, 10_001, now - timedelta(seconds=60), now)
    assert not policy.due(big, 10_000, now - timedelta(hours=1), now)  # nothing unpublished
    assert PublishPolicy(rows=100, fraction=0.1, interval_s=0).due(big, 10_001)


# --- the writer ----------------------------------------------------------------------------


def writer_for(sessions: Sessions, store: IndexStore, **policy: Any) -> IndexWriter:
    return IndexWriter(sessions, store, PublishPolicy(**{"rows": 10, "fraction": 0.5, **policy}))


def test_small_update_waits_but_the_writer_applies_it(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    writer = writer_for(sessions, store)
    index_texts(sessions, cid, texts("a", 10), rng, n=2)  # 20 rows
    first = writer.catch_up("c")
    assert first is not None and (first.watermark, first.count) == (20, 20)

    index_texts(sessions, cid, texts("b", 2), rng, n=2)  # 4 rows: below 10 and 50 %
    assert writer.catch_up("c") == first
    assert not writer.due("c")
    assert writer._live["c"].watermark == 24  # applied in memory, not published
    assert store.pending_since("c", 20) is not None

    index_texts(sessions, cid, texts("c", 3), rng, n=2)  # 10 unpublished rows now
    meta = writer.catch_up("c")
    assert meta is not None and (meta.watermark, meta.count) == (30, 30)
    assert store.pending_since("c", 30) is None
    index, _ = store.load("c", model=MODEL, dim=DIM)
    rows = chunk_rows(sessions, cid)
    assert index.ntotal == len(rows) and index_ids(index) == set(rows)


def test_a_catch_up_without_publishing_applies_in_memory_and_the_next_publishes_it(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = writer_for(sessions, store)
    index_texts(sessions, cid, texts("a", 3), rng, n=2)  # 6 rows: a first snapshot is due
    assert writer.catch_up("c", publish=False) is None
    assert store.meta("c") is None and writer._live["c"].watermark == 6
    index_texts(sessions, cid, texts("b", 2), rng, n=2)
    assert writer.catch_up("c", publish=False) is None
    assert writer._live["c"].watermark == 10

    applied: list[int] = []
    apply = writer._apply

    def spy(session: Any, coll: Any, live: Any, target: int) -> None:
        applied.append(live.watermark)
        apply(session, coll, live, target)

    monkeypatch.setattr(writer, "_apply", spy)
    index_texts(sessions, cid, texts("x", 1), rng, n=2)
    meta = writer.catch_up("c")
    # The publish went on from the index held in memory: only the last two rows were read.
    assert applied == [10]
    assert meta is not None and (meta.watermark, meta.count) == (12, 12)
    index, _ = store.load("c", model=MODEL, dim=DIM)
    rows = chunk_rows(sessions, cid)
    assert index.ntotal == len(rows) == 12 and index_ids(index) == set(rows)


def test_a_small_collection_is_published_when_its_job_has_no_batch_left(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    writer = writer_for(sessions, store)
    pending = index_texts(sessions, cid, texts("a", 2), rng, n=2)
    with transaction(sessions, write=True) as session:
        job_id = create_job(session, "index", collection_id=cid, params={})
        mark_running(session, job_id)
        (batch_id,) = add_batches(session, job_id, [pending])
    assert writer.catch_up("c") is None and not writer.due("c")  # nothing published
    assert store.meta("c") is None

    with transaction(sessions, write=True) as session:
        settle_batch(session, batch_id)
    assert writer.due("c")
    meta = writer.catch_up("c")
    assert meta is not None and (meta.watermark, meta.count) == (4, 4)


def test_fresh_writer_decides_without_loading(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_texts(sessions, cid, texts("a", 10), rng, n=2)
    first = writer_for(sessions, store).catch_up("c")
    index_texts(sessions, cid, texts("b", 2), rng, n=2)

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the index was loaded")

    monkeypatch.setattr(store, "load", no_load)
    writer = writer_for(sessions, store)  # as in a new embedded run
    assert not writer.due("c")
    assert writer.catch_up("c") == first
    assert "c" not in writer._live


def test_interval_publishes_even_with_nothing_new(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = writer_for(sessions, store, interval_s=60)
    index_texts(sessions, cid, texts("a", 10), rng, n=2)
    first = writer.catch_up("c")
    index_texts(sessions, cid, texts("b", 1), rng, n=2)
    assert writer.catch_up("c") == first  # noted as pending, applied in memory
    since = store.pending_since("c", 20)
    assert since is not None
    assert writer.catch_up("c") == first  # not yet due

    later = since + timedelta(seconds=61)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return later

    monkeypatch.setattr(catchup, "datetime", Clock)
    assert writer.due("c")
    meta = writer.catch_up("c")  # nothing new arrived, but a snapshot is owed
    assert meta is not None and (meta.watermark, meta.count) == (22, 22)


def test_force_publishes_and_tombstones_wait_for_a_snapshot(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    writer = writer_for(sessions, store)
    index_texts(sessions, cid, texts("a", 10), rng, n=2)
    first = writer.catch_up("c")
    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "a3")
    assert writer.catch_up("c") == first  # one unpublished change: not due
    # The snapshot still holds the deleted chunks: their tombstones must stay.
    assert len(tombstones(sessions, cid)) == 2
    meta = writer.catch_up("c", force=True)
    assert meta is not None and meta.watermark == collection_seq(sessions, cid)
    assert meta.count == 18
    assert tombstones(sessions, cid) == {}
    # Forcing with nothing unpublished does not write again.
    assert writer.catch_up("c", force=True) == meta


def test_restarted_writer_replays_unpublished_deletions(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, texts("a", 10), rng, n=2)
    writer_for(sessions, store).catch_up("c")
    with transaction(sessions, write=True) as s:
        delete_document(s, cid, "a1")
    writer_for(sessions, store).catch_up("c")  # not due: nothing purged
    meta = writer_for(sessions, store).catch_up("c", force=True)
    index, _ = store.load("c", model=MODEL, dim=DIM)
    rows = chunk_rows(sessions, cid)
    assert index.ntotal == len(rows) and index_ids(index) == set(rows)
    assert meta is not None and meta.count == 18


# --- the reader's tail ---------------------------------------------------------------------


def pages(rows: dict[int, np.ndarray], calls: list[int]) -> Any:
    def fetch(after: int) -> Any:
        calls.append(after)
        ids = sorted(i for i in rows if i > after)
        if ids:
            yield np.asarray(ids, dtype=np.int64), np.stack([rows[i] for i in ids])

    return fetch


def test_tail_fetches_only_new_rows_and_rebases() -> None:
    rng = np.random.default_rng(3)
    rows = {i: rng.standard_normal(DIM).astype(np.float32) for i in range(1, 6)}
    calls: list[int] = []
    tail = Tail(key=1, dim=DIM, floor=0)
    ids, vecs = tail.read(0, pages(rows, calls))
    assert ids.tolist() == [1, 2, 3, 4, 5] and calls == [0]
    assert np.array_equal(vecs[2], rows[3])

    for i in range(6, 2000):
        rows[i] = rng.standard_normal(DIM).astype(np.float32)
    ids2, vecs2 = tail.read(0, pages(rows, calls))
    assert calls == [0, 5]  # only rows above the last one held
    assert ids2.tolist() == list(range(1, 2000))
    assert np.array_equal(vecs2[1500], rows[1501])
    assert ids.tolist() == [1, 2, 3, 4, 5]  # views handed out earlier are unchanged

    # A newer snapshot holds rows up to 1500: they leave the tail, nothing is read again.
    ids3, _ = tail.read(1500, pages(rows, calls))
    assert ids3.tolist() == list(range(1501, 2000)) and calls[-1] == 1999
    # An older snapshot (a search that started before the switch): read again from its floor.
    ids4, _ = tail.read(100, pages(rows, calls))
    assert ids4.tolist() == list(range(101, 2000)) and calls[-1] == 100


def test_tail_reads_nothing_while_the_collection_is_unchanged() -> None:
    rows = {i: np.full(DIM, i, dtype=np.float32) for i in range(1, 4)}
    calls: list[int] = []
    tail = Tail(key=1, dim=DIM, floor=0)
    assert tail.read(0, pages(rows, calls), upto=3)[0].tolist() == [1, 2, 3]
    assert tail.read(0, pages(rows, calls), upto=3)[0].tolist() == [1, 2, 3]
    assert calls == [0]  # the second search asked SQL nothing
    rows[4] = np.full(DIM, 4, dtype=np.float32)
    # A deletion allocates a sequence number too: upto grows past the last chunk held.
    assert tail.read(0, pages(rows, calls), upto=5)[0].tolist() == [1, 2, 3, 4]
    assert tail.read(0, pages(rows, calls), upto=5)[0].tolist() == [1, 2, 3, 4]
    assert calls == [0, 3]


def test_cache_gives_a_new_tail_to_a_new_collection(store: IndexStore) -> None:
    cache = SnapshotCache(store)
    tail = cache.tail("c", key=1, dim=DIM, floor=1 << SEQ_BITS)
    assert cache.tail("c", key=1, dim=DIM, floor=1 << SEQ_BITS) is tail
    assert cache.tail("c", key=2, dim=DIM, floor=2 << SEQ_BITS) is not tail


def test_search_tail_reads_only_new_rows(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    from embedq.tasks import search

    index_texts(sessions, cid, texts("a", 3), rng, n=2)
    cache = SnapshotCache(store)
    with transaction(sessions) as s:
        coll = search.get_collection(s, "c")
        floor = cid << SEQ_BITS
        seen: list[int] = []

        def fetch(after: int) -> Any:
            seen.append(after)
            return search._rows_after(s, coll, after)

        ids, vecs = cache.tail("c", key=cid, dim=DIM, floor=floor).read(floor, fetch)
    assert sorted(ids.tolist()) == sorted(chunk_rows(sessions, cid))
    index_texts(sessions, cid, texts("b", 1), rng, n=2)
    with transaction(sessions) as s:
        coll = search.get_collection(s, "c")
        ids, vecs = cache.tail("c", key=cid, dim=DIM, floor=floor).read(floor, fetch)
        newest = s.scalars(select(Chunk.id).order_by(Chunk.id.desc()).limit(2)).all()
    assert seen[-1] == floor | 6
    assert ids.tolist()[-2:] == sorted(newest)
    rows = chunk_rows(sessions, cid)
    assert all(np.array_equal(vecs[i], rows[int(c)][1]) for i, c in enumerate(ids))


def collection_of_type(sessions: Sessions, name: str, factory: str) -> int:
    from embedq.storage.models import Collection

    cid = make_collection(sessions, name)
    with transaction(sessions, write=True) as s:
        s.get_one(Collection, cid).index_factory = factory
    return cid


def test_an_index_that_cannot_delete_is_rebuilt_without_the_deleted_chunks(
    sessions: Sessions, store: IndexStore, rng: np.random.Generator
) -> None:
    cid = collection_of_type(sessions, "h", "HNSW8")
    writer = writer_for(sessions, store, rows=0, fraction=0.0)
    index_texts(sessions, cid, texts("a", 10), rng, n=2)
    writer.catch_up("h")
    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "a4")
    meta = writer.catch_up("h", force=True)
    index, _ = store.load("h", model=MODEL, dim=DIM)
    rows = chunk_rows(sessions, cid)
    assert index.ntotal == len(rows) and index_ids(index) == set(rows)
    assert meta is not None and meta.count == 18


# --- training ------------------------------------------------------------------------------


def test_train_size_follows_the_list_count() -> None:
    from embedq.storage.catchup import TRAIN_MAX, TRAIN_SAMPLE, train_size
    from embedq.storage.index_store import new_index

    assert train_size(new_index(DIM, "Flat")) == TRAIN_SAMPLE
    assert train_size(new_index(DIM, "IVF64,PQ4")) == TRAIN_SAMPLE
    assert train_size(new_index(DIM, "IVF4096,Flat")) == 64 * 4096
    assert train_size(new_index(DIM, "IVF65536,Flat")) == TRAIN_MAX


def test_training_sample_is_uniform_and_repeatable() -> None:
    from embedq.storage.catchup import sample_ids

    ids = np.arange(1_000_000, dtype=np.int64)
    chosen = sample_ids(ids, 1000, seed=7)
    assert len(chosen) == len(set(chosen.tolist())) == 1000
    assert np.all(np.diff(chosen) > 0)
    assert chosen[0] < 10_000 and chosen[-1] > 990_000  # spread, not the first rows
    assert np.array_equal(chosen, sample_ids(ids, 1000, seed=7))
    assert sample_ids(ids[:10], 1000, seed=7).tolist() == list(range(10))


def test_an_ivf_collection_trains_on_its_rows_and_finds_them(
    sessions: Sessions, store: IndexStore, rng: np.random.Generator
) -> None:
    cid = collection_of_type(sessions, "ivf", "IVF4,Flat")
    writer = writer_for(sessions, store, rows=0, fraction=0.0)
    index_texts(sessions, cid, texts("a", 40), rng, n=2)
    meta = writer.catch_up("ivf", force=True)
    index, _ = store.load("ivf", model=MODEL, dim=DIM)
    rows = chunk_rows(sessions, cid)
    assert meta is not None and meta.count == 80 == len(rows)
    assert index.is_trained and index_ids(index) == set(rows)
    faiss.extract_index_ivf(index).nprobe = 4  # every list: exact
    some = list(rows.items())[:5]
    _, found = index.search(np.stack([vec for _, (_, vec) in some]), 1)
    assert found[:, 0].tolist() == [chunk for chunk, _ in some]
