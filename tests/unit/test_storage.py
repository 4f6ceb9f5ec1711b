"""Unit tests for storage: documents, chunks, jobs and the index writer, on SQLite and PostgreSQL.

Vectors are synthetic (random, L2-normalised, 8 dimensions); no model is loaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import embedq.storage.catchup as catchup
from embedq.storage.catchup import IndexWriter
from embedq.storage.chunks import EmbeddedDocument, Span, write_chunks
from embedq.storage.db import transaction
from embedq.storage.documents import NewDocument, content_hash, delete_document, upsert_documents
from embedq.storage.index_store import CURRENT, IndexStore
from embedq.storage.jobs import (
    add_batch,
    add_errors,
    count_records,
    create_job,
    fail_job,
    job_errors,
    job_view,
    mark_running,
    seal,
    settle_batch,
    try_finish,
)
from embedq.storage.models import (
    SEQ_BITS,
    BatchState,
    Chunk,
    Collection,
    Document,
    Job,
    JobBatch,
    JobStatus,
    Tombstone,
    chunk_id,
)

DIM = 8
MODEL = "m"
Sessions = sessionmaker[Session]


# --- helpers -----------------------------------------------------------------------------------


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_collection(sessions: Sessions, name: str = "c") -> int:
    with transaction(sessions, write=True) as s:
        coll = Collection(
            name=name,
            model=MODEL,
            dim=DIM,
            chunk_tokens=16,
            overlap=2,
            metric="cosine",
            index_factory="Flat",
            seq=0,
        )
        s.add(coll)
        s.flush()
        return coll.id


def upsert(sessions: Sessions, cid: int, docs: Sequence[NewDocument]) -> list[int]:
    with transaction(sessions, write=True) as s:
        return upsert_documents(s, cid, docs)


def doc_row(sessions: Sessions, cid: int, external_id: str) -> Document | None:
    with transaction(sessions) as s:
        return s.scalars(
            select(Document).where(
                Document.collection_id == cid, Document.external_id == external_id
            )
        ).one_or_none()


def embedded(doc: Document, n: int, rng: np.random.Generator) -> EmbeddedDocument:
    """What a worker would produce for ``doc``: ``n`` windows with their vectors."""
    spans = [Span(number=i, start=i * 3, end=i * 3 + 5, tokens=4) for i in range(n)]
    return EmbeddedDocument(doc.id, doc.content_hash, spans, unit_vectors(n, rng))


def write(sessions: Sessions, cid: int, docs: Sequence[EmbeddedDocument]) -> int:
    with transaction(sessions, write=True) as s:
        return write_chunks(s, cid, docs)


def index_texts(
    sessions: Sessions, cid: int, texts: dict[str, str], rng: np.random.Generator, n: int = 2
) -> list[int]:
    """Upsert documents and write ``n`` chunks for each pending one; return the pending ids."""
    pending = upsert(sessions, cid, [NewDocument(k, v) for k, v in texts.items()])
    with transaction(sessions) as s:
        docs = s.scalars(select(Document).where(Document.id.in_(pending))).all()
    assert write(sessions, cid, [embedded(d, n, rng) for d in docs]) == len(pending)
    return pending


def chunk_rows(sessions: Sessions, cid: int) -> dict[int, tuple[int, np.ndarray]]:
    """chunk id -> (document id, vector) for every chunk row of the collection."""
    with transaction(sessions) as s:
        rows = s.execute(
            select(Chunk.id, Chunk.document_id, Chunk.vector).where(Chunk.collection_id == cid)
        ).all()
    return {r.id: (r.document_id, np.frombuffer(r.vector, dtype=np.float32)) for r in rows}


def collection_seq(sessions: Sessions, cid: int) -> int:
    with transaction(sessions) as s:
        return s.scalar(select(Collection.seq).where(Collection.id == cid))


def tombstones(sessions: Sessions, cid: int) -> dict[int, int]:
    with transaction(sessions) as s:
        rows = s.execute(
            select(Tombstone.chunk_id, Tombstone.seq).where(Tombstone.collection_id == cid)
        ).all()
    return {r.chunk_id: r.seq for r in rows}


def count(sessions: Sessions, model: Any) -> int:
    with transaction(sessions) as s:
        return s.scalar(select(func.count()).select_from(model))


# --- documents ---------------------------------------------------------------------------------


def test_new_documents_are_pending(sessions: Sessions, cid: int) -> None:
    pending = upsert(
        sessions,
        cid,
        [NewDocument("a", "alpha"), NewDocument("b", "beta", title="B", meta={"k": 1})],
    )
    a, b = doc_row(sessions, cid, "a"), doc_row(sessions, cid, "b")
    assert pending == sorted([a.id, b.id])
    assert (b.title, b.text, b.meta) == ("B", "beta", {"k": 1})
    assert b.content_hash == content_hash("B", "beta")
    assert a.indexed_hash is None and b.indexed_hash is None
    # Still pending until chunks are written: submitting again gives the same work.
    assert upsert(sessions, cid, [NewDocument("a", "alpha")]) == [a.id]


def test_every_string_is_stored_as_given(sessions: Sessions, cid: int) -> None:
    # PostgreSQL receives the documents as arrays: quoting, NULL and the text "NULL" must
    # survive the trip, as must meta that is JSON null, a string, or nested.
    odd = [
        NewDocument('q"uo\\te', 'a "quoted" \\ back{slash}, comma', title="NULL", meta=None),
        NewDocument("{1,2}", "ünïcödé ✓ 𝄞", title=None, meta={"z": [1, {"a": None}], "b": "x"}),
        NewDocument("NULL", " leading and trailing ", title="", meta={"s": "it's"}),
    ]
    assert len(upsert(sessions, cid, odd)) == 3
    for doc in odd:
        row = doc_row(sessions, cid, doc.external_id)
        assert row is not None
        assert (row.text, row.title, row.meta) == (doc.text, doc.title, doc.meta)
        assert row.content_hash == content_hash(doc.title, doc.text)


def test_unchanged_indexed_document_is_no_work(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    pending = index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng)
    before = doc_row(sessions, cid, "a")
    assert before.indexed_hash == before.content_hash

    assert upsert(sessions, cid, [NewDocument("a", "alpha"), NewDocument("b", "beta")]) == []
    after = doc_row(sessions, cid, "a")
    # Nothing was rewritten.
    assert after.updated_at == before.updated_at
    assert count(sessions, Document) == len(pending) == 2


def test_changed_text_is_pending_again(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng)
    old = doc_row(sessions, cid, "a")
    old_chunks = chunk_rows(sessions, cid)

    assert upsert(sessions, cid, [NewDocument("a", "alpha v2"), NewDocument("b", "beta")]) == [
        old.id
    ]
    new = doc_row(sessions, cid, "a")
    assert new.id == old.id
    assert new.text == "alpha v2"
    assert new.content_hash == content_hash(None, "alpha v2")
    # The old chunks stay searchable until the new ones replace them.
    assert new.indexed_hash == old.content_hash
    assert chunk_rows(sessions, cid).keys() == old_chunks.keys()
    # Submitted again before its new chunks are written: still work to do.
    assert upsert(sessions, cid, [NewDocument("a", "alpha v2")]) == [old.id]


def test_title_change_is_a_content_change(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng)
    doc = doc_row(sessions, cid, "a")
    assert upsert(sessions, cid, [NewDocument("a", "alpha", title="T")]) == [doc.id]


def test_meta_only_change_updates_meta_without_work(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng)
    chunks = chunk_rows(sessions, cid)

    assert upsert(sessions, cid, [NewDocument("a", "alpha", meta={"lang": "en"})]) == []
    doc = doc_row(sessions, cid, "a")
    assert doc.meta == {"lang": "en"}
    assert doc.indexed_hash == doc.content_hash
    assert upsert(sessions, cid, [NewDocument("a", "alpha", meta={"lang": "fr"})]) == []
    assert doc_row(sessions, cid, "a").meta == {"lang": "fr"}
    assert chunk_rows(sessions, cid).keys() == chunks.keys()


def test_meta_key_order_is_not_a_change(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha", meta={"x": 1, "y": [1, 2]})])
    assert write(sessions, cid, [embedded(doc_row(sessions, cid, "a"), 1, rng)]) == 1
    before = doc_row(sessions, cid, "a")

    assert upsert(sessions, cid, [NewDocument("a", "alpha", meta={"y": [1, 2], "x": 1})]) == []
    assert doc_row(sessions, cid, "a").updated_at == before.updated_at


def test_last_occurrence_wins_within_one_call(sessions: Sessions, cid: int) -> None:
    pending = upsert(
        sessions,
        cid,
        [
            NewDocument("a", "first", meta={"n": 1}),
            NewDocument("b", "other"),
            NewDocument("a", "second", meta={"n": 2}),
        ],
    )
    doc = doc_row(sessions, cid, "a")
    assert len(pending) == 2 and doc.id in pending
    assert (doc.text, doc.meta) == ("second", {"n": 2})
    assert count(sessions, Document) == 2


def test_collections_are_separate(sessions: Sessions, cid: int) -> None:
    other = make_collection(sessions, "other")
    a1 = upsert(sessions, cid, [NewDocument("a", "alpha")])
    a2 = upsert(sessions, other, [NewDocument("a", "alpha")])
    assert len(a1) == len(a2) == 1 and a1 != a2


# --- chunks ------------------------------------------------------------------------------------


def test_write_chunks_assigns_sequential_ids(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha"), NewDocument("b", "beta")])
    a, b = doc_row(sessions, cid, "a"), doc_row(sessions, cid, "b")
    ea, eb = embedded(a, 3, rng), embedded(b, 2, rng)

    # Documents are written in id order whatever order they come in.
    assert write(sessions, cid, [eb, ea]) == 2

    rows = chunk_rows(sessions, cid)
    assert sorted(rows) == [chunk_id(cid, seq) for seq in range(1, 6)]
    assert collection_seq(sessions, cid) == 5
    assert [rows[chunk_id(cid, s)][0] for s in range(1, 6)] == [a.id] * 3 + [b.id] * 2
    for seq, vector in zip(range(1, 4), ea.vectors, strict=True):
        np.testing.assert_array_equal(rows[chunk_id(cid, seq)][1], vector)
    with transaction(sessions) as s:
        spans = s.execute(
            select(Chunk.window, Chunk.start, Chunk.end, Chunk.tokens)
            .where(Chunk.document_id == a.id)
            .order_by(Chunk.id)
        ).all()
    assert [tuple(r) for r in spans] == [(i, i * 3, i * 3 + 5, 4) for i in range(3)]
    assert doc_row(sessions, cid, "a").indexed_hash == a.content_hash
    assert tombstones(sessions, cid) == {}


def test_chunk_ids_carry_the_collection(sessions: Sessions, rng: np.random.Generator) -> None:
    first = make_collection(sessions, "first")
    second = make_collection(sessions, "second")
    index_texts(sessions, first, {"a": "alpha"}, rng, n=1)
    index_texts(sessions, second, {"a": "alpha"}, rng, n=1)
    assert list(chunk_rows(sessions, second)) == [(second << SEQ_BITS) | 1]
    assert list(chunk_rows(sessions, first)) == [(first << SEQ_BITS) | 1]


def test_new_chunks_replace_old_ones_with_tombstones(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    a = doc_row(sessions, cid, "a")
    b_chunks = {k for k, (d, _) in chunk_rows(sessions, cid).items() if d != a.id}
    old_a = {k for k, (d, _) in chunk_rows(sessions, cid).items() if d == a.id}
    assert collection_seq(sessions, cid) == 4

    upsert(sessions, cid, [NewDocument("a", "alpha v2")])
    changed = doc_row(sessions, cid, "a")
    assert write(sessions, cid, [embedded(changed, 3, rng)]) == 1

    rows = chunk_rows(sessions, cid)
    new_a = {k for k, (d, _) in rows.items() if d == a.id}
    # One sequence number for the tombstones, then three for the new chunks.
    assert tombstones(sessions, cid) == dict.fromkeys(old_a, 5)
    assert new_a == {chunk_id(cid, s) for s in (6, 7, 8)}
    assert rows.keys() == new_a | b_chunks
    assert collection_seq(sessions, cid) == 8
    assert doc_row(sessions, cid, "a").indexed_hash == changed.content_hash


def test_redelivered_batch_writes_nothing(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha")])
    doc = embedded(doc_row(sessions, cid, "a"), 2, rng)
    assert write(sessions, cid, [doc]) == 1
    rows = chunk_rows(sessions, cid)

    assert write(sessions, cid, [doc]) == 0
    assert chunk_rows(sessions, cid).keys() == rows.keys()
    assert collection_seq(sessions, cid) == 2
    assert tombstones(sessions, cid) == {}


def test_document_changed_after_embedding_is_skipped(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha")])
    stale = embedded(doc_row(sessions, cid, "a"), 2, rng)
    pending = upsert(sessions, cid, [NewDocument("a", "alpha v2")])

    assert write(sessions, cid, [stale]) == 0
    assert chunk_rows(sessions, cid) == {}
    assert collection_seq(sessions, cid) == 0
    # Still pending: the newer text gets embedded by its own batch.
    assert doc_row(sessions, cid, "a").indexed_hash is None
    assert upsert(sessions, cid, [NewDocument("a", "alpha v2")]) == pending


def test_deleted_document_is_skipped(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha")])
    doc = embedded(doc_row(sessions, cid, "a"), 2, rng)
    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "a")
    assert write(sessions, cid, [doc]) == 0
    assert chunk_rows(sessions, cid) == {}


def test_document_without_windows_is_marked_indexed(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng, n=2)
    old = set(chunk_rows(sessions, cid))
    upsert(sessions, cid, [NewDocument("a", "")])
    doc = doc_row(sessions, cid, "a")
    empty = EmbeddedDocument(doc.id, doc.content_hash, [], np.empty((0, DIM), np.float32))

    assert write(sessions, cid, [empty]) == 1
    assert chunk_rows(sessions, cid) == {}
    assert tombstones(sessions, cid).keys() == old
    assert doc_row(sessions, cid, "a").indexed_hash == doc.content_hash


def test_chunk_ids_follow_commit_order(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng, n=2)
    upsert(sessions, cid, [NewDocument("b", "beta"), NewDocument("c", "gamma")])
    b, c = doc_row(sessions, cid, "b"), doc_row(sessions, cid, "c")
    writer = IndexWriter(sessions, store)
    first = writer.catch_up("c")

    done = threading.Event()

    def second_writer() -> None:
        write(sessions, cid, [embedded(c, 2, np.random.default_rng(7))])
        done.set()

    with transaction(sessions, write=True) as s:
        assert write_chunks(s, cid, [embedded(b, 2, rng)]) == 1
        # Uncommitted rows are invisible to the index writer: its watermark stays put.
        assert writer.catch_up("c") == first
        thread = threading.Thread(target=second_writer)
        thread.start()
        # The second writer waits for the collection lock held by this transaction.
        assert not done.wait(0.5)
    thread.join(timeout=30)
    assert done.is_set()

    rows = chunk_rows(sessions, cid)
    b_ids = sorted(k for k, (d, _) in rows.items() if d == b.id)
    c_ids = sorted(k for k, (d, _) in rows.items() if d == c.id)
    assert b_ids == [chunk_id(cid, 3), chunk_id(cid, 4)]
    assert c_ids == [chunk_id(cid, 5), chunk_id(cid, 6)]
    meta = writer.catch_up("c")
    assert meta.watermark == 6
    assert_index_matches_sql(published(store)[0], rows)


def run_while_locked(
    sessions: Sessions, cid: int, holder: EmbeddedDocument, other: Any
) -> tuple[Any, bool]:
    """Run ``other(session)`` in a thread while this thread's uncommitted write holds the lock.

    Returns what ``other`` returned and whether it was still waiting when the holder committed.
    """
    result: list[Any] = []
    finished = threading.Event()

    def run() -> None:
        with transaction(sessions, write=True) as s:
            result.append(other(s))
        finished.set()

    with transaction(sessions, write=True) as s:
        assert write_chunks(s, cid, [holder]) == 1
        thread = threading.Thread(target=run)
        thread.start()
        waited = not finished.wait(0.5)
    thread.join(timeout=30)
    assert finished.is_set()
    return result[0], waited


def test_concurrent_redelivery_writes_once(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    upsert(sessions, cid, [NewDocument("a", "alpha")])
    doc = embedded(doc_row(sessions, cid, "a"), 2, rng)

    written, waited = run_while_locked(sessions, cid, doc, lambda s: write_chunks(s, cid, [doc]))

    assert waited
    assert written == 0
    assert sorted(chunk_rows(sessions, cid)) == [chunk_id(cid, 1), chunk_id(cid, 2)]
    assert collection_seq(sessions, cid) == 2


def test_delete_during_chunk_write_tombstones_the_new_chunks(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    writer = IndexWriter(sessions, store)
    writer.catch_up("c")
    upsert(sessions, cid, [NewDocument("a", "alpha v2")])
    doc = embedded(doc_row(sessions, cid, "a"), 3, rng)

    deleted, waited = run_while_locked(sessions, cid, doc, lambda s: delete_document(s, cid, "a"))

    assert waited and deleted
    rows = chunk_rows(sessions, cid)
    assert {d for d, _ in rows.values()} == {doc_row(sessions, cid, "b").id}
    # Old chunks (1, 2) were tombstoned by the write, its new ones (6-8) by the deletion.
    assert tombstones(sessions, cid) == {
        chunk_id(cid, 1): 5,
        chunk_id(cid, 2): 5,
        chunk_id(cid, 6): 9,
        chunk_id(cid, 7): 9,
        chunk_id(cid, 8): 9,
    }
    writer.catch_up("c")
    assert_index_matches_sql(published(store)[0], rows)


def test_delete_document_leaves_tombstones(
    sessions: Sessions, cid: int, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    a = doc_row(sessions, cid, "a")
    rows = chunk_rows(sessions, cid)
    a_chunks = {k for k, (d, _) in rows.items() if d == a.id}

    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "a") is True

    assert doc_row(sessions, cid, "a") is None
    assert doc_row(sessions, cid, "b") is not None
    assert chunk_rows(sessions, cid).keys() == rows.keys() - a_chunks
    assert tombstones(sessions, cid) == dict.fromkeys(a_chunks, 5)
    assert collection_seq(sessions, cid) == 5


def test_delete_unknown_document(sessions: Sessions, cid: int, rng: np.random.Generator) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng)
    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "nope") is False
    assert len(chunk_rows(sessions, cid)) == 2
    assert tombstones(sessions, cid) == {}
    assert collection_seq(sessions, cid) == 2


# --- jobs --------------------------------------------------------------------------------------


def get_job(sessions: Sessions, job_id: str) -> dict[str, Any]:
    with transaction(sessions) as s:
        return job_view(s, s.get(Job, job_id))


def test_job_lifecycle(sessions: Sessions, cid: int) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", collection_id=cid, params={"source": "x.jsonl"})
        b1 = add_batch(s, job_id, [1, 2, 3])
        b2 = add_batch(s, job_id, [4, 5])
        count_records(s, job_id, accepted=6, unchanged=1)

    view = get_job(sessions, job_id)
    assert view["id"] == job_id
    assert (view["kind"], view["status"], view["collection"]) == ("index", "queued", "c")
    assert view["progress"] == {"total": 6, "done": 1, "failed": 0}
    assert view["params"] == {"source": "x.jsonl"}
    assert view["finished_at"] is None
    json.dumps(view)  # the API returns it as it is

    with transaction(sessions, write=True) as s:
        mark_running(s, job_id)
        assert settle_batch(s, b1) is True
    with transaction(sessions, write=True) as s:
        assert settle_batch(s, b1) is False  # a redelivery counts once
        assert settle_batch(s, 10**9) is False
    assert get_job(sessions, job_id)["progress"] == {"total": 6, "done": 4, "failed": 0}

    with transaction(sessions, write=True) as s:
        assert settle_batch(s, b2) is True
        # Every batch is settled, but the producer may still add some.
        assert try_finish(s, job_id) is False
    assert get_job(sessions, job_id)["status"] == "running"

    with transaction(sessions, write=True) as s:
        seal(s, job_id)
        assert try_finish(s, job_id, {"documents": 6}) is True
    with transaction(sessions, write=True) as s:
        assert try_finish(s, job_id) is False

    view = get_job(sessions, job_id)
    assert view["status"] == "succeeded"
    assert view["progress"] == {"total": 6, "done": 6, "failed": 0}
    assert view["error"] is None
    assert view["result"] == {"documents": 6}
    assert view["started_at"] is not None and view["finished_at"] is not None
    assert view["unchanged"] == 1


def test_job_waits_for_pending_batches_after_seal(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", params={})
        b1 = add_batch(s, job_id, [1])
        b2 = add_batch(s, job_id, [2])
        seal(s, job_id)
    with transaction(sessions, write=True) as s:
        assert settle_batch(s, b1)
        assert try_finish(s, job_id) is False
    assert get_job(sessions, job_id)["status"] == "queued"
    with transaction(sessions, write=True) as s:
        assert settle_batch(s, b2)
        assert try_finish(s, job_id) is True
        assert try_finish(s, job_id) is False
    assert get_job(sessions, job_id)["status"] == "succeeded"
    assert get_job(sessions, job_id)["collection"] is None


def test_sealed_job_without_batches_finishes(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", params={})
        count_records(s, job_id, accepted=3, unchanged=3)
        seal(s, job_id)
        assert try_finish(s, job_id) is True
    view = get_job(sessions, job_id)
    assert view["status"] == "succeeded"
    assert view["progress"] == {"total": 3, "done": 3, "failed": 0}


def test_failed_batch_fails_the_job(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", params={})
        b1 = add_batch(s, job_id, [1, 2])
        b2 = add_batch(s, job_id, [3, 4, 5])
        count_records(s, job_id, accepted=5, unchanged=0)
        seal(s, job_id)
    with transaction(sessions, write=True) as s:
        assert settle_batch(s, b1) is True
        assert settle_batch(s, b2, error="CUDA out of memory") is True
        assert settle_batch(s, b2, error="CUDA out of memory") is False
        assert try_finish(s, job_id) is True

    with transaction(sessions) as s:
        assert s.get(JobBatch, b2).state == BatchState.failed
        assert s.get(JobBatch, b1).state == BatchState.done
        errors = job_errors(s, job_id)
    view = get_job(sessions, job_id)
    assert view["status"] == "failed"
    assert view["progress"] == {"total": 5, "done": 2, "failed": 3}
    assert "3 document(s)" in view["error"]
    assert view["rejected"] == 1
    assert errors == [{"line": None, "reason": "batch of 3 failed: CUDA out of memory"}]


def test_failed_batch_counts_when_job_already_loaded(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", params={})
        batch = add_batch(s, job_id, [1])
        seal(s, job_id)
    with transaction(sessions, write=True) as s:
        assert job_view(s, s.get(Job, job_id))["progress"]["failed"] == 0
        assert settle_batch(s, batch, error="boom")
        assert try_finish(s, job_id) is True
    assert get_job(sessions, job_id)["status"] == "failed"


def test_fail_job_only_once(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "cluster", params={"k": 3})
        fail_job(s, job_id, "no vectors")
        seal(s, job_id)
        assert try_finish(s, job_id) is False
        fail_job(s, job_id, "later error")
    view = get_job(sessions, job_id)
    assert (view["status"], view["error"]) == (JobStatus.failed.value, "no vectors")


def test_job_errors_shape(sessions: Sessions) -> None:
    with transaction(sessions, write=True) as s:
        job_id = create_job(s, "index", params={})
        other = create_job(s, "index", params={})
        assert (
            add_errors(
                s,
                job_id,
                [
                    {"line": 3, "reason": "missing text"},
                    {"line": 7, "id": "doc-7", "reason": "text is empty"},
                    {"line": 9, "id": "d9", "source": "b.csv", "reason": "bad row"},
                ],
            )
            == 3
        )
        add_errors(s, other, [{"line": 1, "reason": "elsewhere"}])
        assert add_errors(s, job_id, []) == 0

    with transaction(sessions) as s:
        errors = job_errors(s, job_id)
        page = job_errors(s, job_id, limit=1, offset=1)
    assert errors == [
        {"line": 3, "reason": "missing text"},
        {"line": 7, "id": "doc-7", "reason": "text is empty"},
        {"line": 9, "id": "d9", "source": "b.csv", "reason": "bad row"},
    ]
    assert page == [errors[1]]
    assert get_job(sessions, job_id)["rejected"] == 3


# --- index writer ------------------------------------------------------------------------------


def published(store: IndexStore, name: str = "c"):
    return store.load(name, model=MODEL, dim=DIM)


def index_ids(index: Any) -> set[int]:
    return {int(index.id_map.at(i)) for i in range(index.ntotal)}


def assert_index_matches_sql(index: Any, rows: dict[int, tuple[int, np.ndarray]]) -> None:
    assert index.ntotal == len(rows)
    assert index_ids(index) == set(rows)
    if rows:
        ids = list(rows)
        vectors = np.stack([rows[i][1] for i in ids])
        scores, found = index.search(vectors, 1)
        assert found[:, 0].tolist() == ids
        np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)


def test_catch_up_publishes_snapshot(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    writer = IndexWriter(sessions, store)
    assert writer.catch_up("c") is None  # nothing written yet: nothing to publish
    index_texts(sessions, cid, {"a": "alpha", "b": "beta", "c": "gamma"}, rng, n=2)

    meta = writer.catch_up("c")

    assert meta.watermark == collection_seq(sessions, cid) == 6
    assert meta.count == 6
    assert (meta.model, meta.dim, meta.factory) == (MODEL, DIM, "Flat")
    index, loaded = published(store)
    assert loaded == meta
    assert_index_matches_sql(index, chunk_rows(sessions, cid))


def test_catch_up_without_changes_does_not_republish(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng)
    writer = IndexWriter(sessions, store)
    first = writer.catch_up("c")
    stamp = (store.folder("c") / CURRENT).stat().st_mtime_ns

    assert writer.catch_up("c") == first
    assert store.meta("c") == first
    assert (store.folder("c") / CURRENT).stat().st_mtime_ns == stamp
    assert {p.name for p in store.folder("c").glob("index-*")} == {first.file}


def test_catch_up_adds_and_removes_exactly(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta", "c": "gamma"}, rng, n=2)
    writer = IndexWriter(sessions, store)
    first = writer.catch_up("c")
    before = chunk_rows(sessions, cid)

    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "b")
    index_texts(sessions, cid, {"d": "delta", "a": "alpha v2"}, rng, n=3)
    after = chunk_rows(sessions, cid)
    gone = before.keys() - after.keys()
    assert len(gone) == 4  # b's two chunks and a's two old ones
    assert tombstones(sessions, cid).keys() == gone

    meta = writer.catch_up("c")

    assert meta.file != first.file
    assert meta.watermark == collection_seq(sessions, cid)
    index, _ = published(store)
    assert_index_matches_sql(index, after)
    with transaction(sessions) as s:
        assert index.ntotal == s.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.collection_id == cid)
        )
    # A removed chunk's own vector no longer finds it.
    gone_vectors = np.stack([before[i][1] for i in gone])
    _, found = index.search(gone_vectors, 5)
    assert not set(found.ravel().tolist()) & gone
    # Tombstones at or below the published watermark are no longer needed.
    assert tombstones(sessions, cid) == {}


def test_tombstones_above_watermark_wait_for_next_catch_up(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    writer = IndexWriter(sessions, store)
    writer.catch_up("c")
    with transaction(sessions, write=True) as s:
        delete_document(s, cid, "a")
    # Created after the published watermark: kept until a snapshot contains the deletion.
    assert set(tombstones(sessions, cid).values()) == {5}
    assert store.meta("c").watermark == 4

    meta = writer.catch_up("c")
    assert meta.watermark == 5
    assert tombstones(sessions, cid) == {}
    assert_index_matches_sql(published(store)[0], chunk_rows(sessions, cid))


def test_catch_up_after_failed_publish_has_no_duplicates(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_texts(sessions, cid, {"a": "alpha"}, rng, n=2)
    writer = IndexWriter(sessions, store)
    writer.catch_up("c")
    index_texts(sessions, cid, {"b": "beta"}, rng, n=2)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(store, "publish", disk_full)
        with pytest.raises(OSError):
            writer.catch_up("c")
    meta = writer.catch_up("c")

    assert meta.count == 4
    assert_index_matches_sql(published(store)[0], chunk_rows(sessions, cid))


def test_fresh_writer_continues_incrementally(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    first = IndexWriter(sessions, store).catch_up("c")

    reads: list[tuple[int, int]] = []
    real_pages = catchup._chunk_pages

    def spy(session: Session, collection_id: int, after: int, upto: int):
        reads.append((after, upto))
        return real_pages(session, collection_id, after, upto)

    monkeypatch.setattr(catchup, "_chunk_pages", spy)

    writer = IndexWriter(sessions, store)  # as in a new writer process
    assert writer.catch_up("c") == first
    assert reads == []

    with transaction(sessions, write=True) as s:
        delete_document(s, cid, "b")
    index_texts(sessions, cid, {"c": "gamma"}, rng, n=2)
    meta = writer.catch_up("c")

    # Only the rows above the loaded snapshot's watermark were read.
    assert reads == [(first.watermark, meta.watermark)]
    assert meta.watermark == collection_seq(sessions, cid) == 7
    assert_index_matches_sql(published(store)[0], chunk_rows(sessions, cid))


def damage_truncate(store: IndexStore) -> None:
    path = store.folder("c") / store.meta("c").file
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def damage_model(store: IndexStore) -> None:
    current = store.folder("c") / CURRENT
    data = json.loads(current.read_text())
    data["model"] = "another-model"
    current.write_text(json.dumps(data))


def damage_remove_current(store: IndexStore) -> None:
    (store.folder("c") / CURRENT).unlink()


@pytest.mark.parametrize("damage", [damage_truncate, damage_model, damage_remove_current])
def test_unusable_snapshot_is_rebuilt_from_sql(
    sessions: Sessions,
    cid: int,
    store: IndexStore,
    rng: np.random.Generator,
    damage: Any,
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta", "c": "gamma"}, rng, n=2)
    IndexWriter(sessions, store).catch_up("c")
    with transaction(sessions, write=True) as s:
        delete_document(s, cid, "b")
    before = IndexWriter(sessions, store).catch_up("c")
    damage(store)

    meta = IndexWriter(sessions, store).catch_up("c")

    assert meta is not None and meta.file != before.file
    assert (meta.model, meta.watermark) == (MODEL, collection_seq(sessions, cid))
    index, _ = published(store)
    assert_index_matches_sql(index, chunk_rows(sessions, cid))
    assert meta.count == 4


def test_rebuild_drops_and_rebuilds(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    index_texts(sessions, cid, {"a": "alpha", "b": "beta"}, rng, n=2)
    writer = IndexWriter(sessions, store)
    first = writer.catch_up("c")
    meta = writer.rebuild("c")
    assert meta.file != first.file
    assert_index_matches_sql(published(store)[0], chunk_rows(sessions, cid))


def test_catch_up_unknown_collection(sessions: Sessions, store: IndexStore) -> None:
    # A request for a collection deleted meanwhile: nothing to do, and no folder made for it.
    assert IndexWriter(sessions, store).catch_up("missing") is None
    assert not (store.root / "missing").exists()


def test_collections_have_separate_snapshots(
    sessions: Sessions, cid: int, store: IndexStore, rng: np.random.Generator
) -> None:
    other = make_collection(sessions, "other")
    index_texts(sessions, cid, {"a": "alpha"}, rng, n=2)
    index_texts(sessions, other, {"a": "alpha", "b": "beta"}, rng, n=3)
    writer = IndexWriter(sessions, store)
    writer.catch_up("c")
    writer.catch_up("other")
    assert_index_matches_sql(published(store, "c")[0], chunk_rows(sessions, cid))
    assert_index_matches_sql(published(store, "other")[0], chunk_rows(sessions, other))
