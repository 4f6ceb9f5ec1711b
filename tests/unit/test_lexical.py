"""The lexical index: kept up to date by the writer, crash-safe, rebuilt from SQL."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.catchup import IndexWriter, PublishPolicy
from embedq.storage.chunks import EmbeddedDocument, Span
from embedq.storage.collection_delete import delete_collection_rows
from embedq.storage.collection_files import remove_collection_folder
from embedq.storage.db import transaction
from embedq.storage.documents import NewDocument, delete_document, embedding_input
from embedq.storage.index_store import IndexStore
from embedq.storage.lexical import (
    STATE,
    LexicalStore,
    collection_key,
    query_terms,
    tail_reader,
)
from embedq.storage.lexical_tail import Tail, TailWindow, score
from embedq.storage.models import Collection, Document
from tests.unit.test_storage import make_collection, unit_vectors, upsert, write

Sessions = sessionmaker[Session]

TEXTS = {
    "bees": "Honeybees dance in the hive to tell the colony where the flowers are.",
    "stars": "Neutron stars spin quickly and emit beams of radio waves.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough.",
}


def add(sessions: Sessions, cid: int, texts: dict[str, str], rng: np.random.Generator) -> None:
    """Store documents as two windows each: the two halves of the embedded string."""
    pending = upsert(sessions, cid, [NewDocument(k, v, title=k.upper()) for k, v in texts.items()])
    with transaction(sessions) as s:
        docs = s.scalars(select(Document).where(Document.id.in_(pending))).all()
    out = []
    for d in docs:
        full = len(embedding_input(d.title, d.text))
        spans = [Span(0, 0, full // 2, 8), Span(1, full // 2, full, 8)]
        out.append(EmbeddedDocument(d.id, d.content_hash, spans, unit_vectors(2, rng)))
    write(sessions, cid, out)


def external(sessions: Sessions, chunk_ids: list[int]) -> list[str]:
    from embedq.storage.models import Chunk

    with transaction(sessions) as s:
        rows = dict(
            s.execute(
                select(Chunk.id, Document.external_id)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(chunk_ids))
            ).all()
        )
    return [rows[c] for c in chunk_ids if c in rows]


def key(sessions: Sessions, cid: int) -> str:
    with transaction(sessions) as s:
        return collection_key(s.get_one(Collection, cid))


@pytest.fixture
def lexical(tmp_path: Path) -> LexicalStore:
    return LexicalStore(tmp_path / "idx")


@pytest.fixture
def writer(sessions: Sessions, tmp_path: Path, lexical: LexicalStore) -> IndexWriter:
    return IndexWriter(sessions, IndexStore(tmp_path / "idx"), PublishPolicy(rows=0), lexical)


def test_query_terms_are_stemmed_without_stop_words() -> None:
    assert query_terms("Are the bees dancing? Dancing bees!") == ["bee", "danc"]


def test_writer_indexes_windows_and_search_finds_them(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    assert lexical.watermark("c", key(sessions, cid)) == 6
    ids, scores = lexical.search("c", key(sessions, cid), "why does the dough rise", 10)
    assert external(sessions, ids)[0] == "bread"
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    # The title is part of the first window, as it is of the embedded string.
    ids, _ = lexical.search("c", key(sessions, cid), "STARS", 10)
    assert set(external(sessions, ids)) == {"stars"}
    assert lexical.search("c", key(sessions, cid), "the and of", 10) == ([], [])


def test_deleted_and_replaced_documents_leave_the_index(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    with transaction(sessions, write=True) as s:
        assert delete_document(s, cid, "stars")
    add(sessions, cid, {"bees": "Wasps build paper nests."}, rng)
    writer.catch_up("c")
    assert lexical.search("c", key(sessions, cid), "neutron radio", 10) == ([], [])
    assert lexical.search("c", key(sessions, cid), "honeybees flowers", 10) == ([], [])
    ids, _ = lexical.search("c", key(sessions, cid), "paper nests", 10)
    assert external(sessions, ids) == ["bees"]
    assert len(ids) == 1


def test_a_crash_after_commit_adds_nothing_twice(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    add(sessions, cid, {"moss": "Moss grows on the north side of trees."}, rng)
    writer.catch_up("c")
    # As if the last commit landed but its watermark was never recorded.
    state = lexical.root / "c" / STATE
    state.write_text(state.read_text().replace('"watermark": 8', '"watermark": 6'))
    with transaction(sessions) as s:
        coll = s.get_one(Collection, cid)
        assert lexical.catch_up(s, coll, 8) == 8
    ids, _ = lexical.search("c", key(sessions, cid), "moss north trees", 10)
    assert len(ids) == 2 and len(set(ids)) == 2  # its two windows, once each


def test_a_lost_index_is_rebuilt_from_sql(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    lexical.drop("c")
    assert lexical.search("c", key(sessions, cid), "sourdough", 10) == ([], [])
    add(sessions, cid, {"moss": "Moss grows on trees."}, rng)
    writer.catch_up("c")
    ids, _ = lexical.search("c", key(sessions, cid), "sourdough", 10)
    assert external(sessions, ids) == ["bread", "bread"][: len(ids)] and ids
    assert lexical.size("c") > 0


def test_filtered_to_documents(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    add(sessions, cid, {"a": "bees and flowers", "b": "bees and hives", "c": "bees"}, rng)
    writer.catch_up("c")
    with transaction(sessions) as s:
        b = s.scalar(select(Document.id).where(Document.external_id == "b"))
    ids, _ = lexical.search("c", key(sessions, cid), "bees flowers", 10, docs=[b])
    assert set(external(sessions, ids)) == {"b"}
    assert lexical.search("c", key(sessions, cid), "bees", 10, docs=[]) == ([], [])


def test_a_collection_created_again_starts_over(
    sessions: Sessions, writer: IndexWriter, lexical: LexicalStore, rng: np.random.Generator
) -> None:
    first = make_collection(sessions, "c")
    add(sessions, first, TEXTS, rng)
    writer.catch_up("c")
    first_key = key(sessions, first)
    with transaction(sessions, write=True) as s:
        s.delete(s.get_one(Collection, first))
    second = make_collection(sessions, "c")
    add(sessions, second, {"moss": "Moss grows on trees."}, rng)
    writer.catch_up("c")
    assert lexical.search("c", key(sessions, second), "sourdough", 10) == ([], [])
    assert lexical.search("c", first_key, "moss", 10) == ([], [])
    assert len(lexical.search("c", key(sessions, second), "moss", 10)[0]) >= 1


def test_a_collection_deleted_during_a_catch_up_is_let_go(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lexical commit fails because the collection's folder went from under it: the
    catch-up owes nothing to a deleted collection, so it ends quietly and leaves no folder."""
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    add(sessions, cid, {"moss": "Moss grows on trees."}, rng)

    def deleted_meanwhile(session: Session, coll: Collection, target: int) -> int:
        with transaction(sessions, write=True) as s:
            delete_collection_rows(s, s.get_one(Collection, cid))
        remove_collection_folder(writer.store, "c")
        # What Tantivy's commit raises when the index folder went away under the writer.
        raise ValueError("An IO error occurred: 'No such file or directory (os error 2)'")

    monkeypatch.setattr(lexical, "catch_up", deleted_meanwhile)
    assert writer.catch_up("c") is None
    assert not writer.store.folder("c").exists()
    # A failure while the collection still exists is not hidden.
    second = make_collection(sessions, "d")
    add(sessions, second, TEXTS, rng)

    def broken(session: Session, coll: Collection, target: int) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(lexical, "catch_up", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.catch_up("d")


def test_windows_written_since_the_last_commit_are_found_on_the_index_scale(
    sessions: Sessions,
    cid: int,
    writer: IndexWriter,
    lexical: LexicalStore,
    rng: np.random.Generator,
) -> None:
    """Rows above the lexical watermark are read from SQL and scored with the index's own
    statistics: a new window is found before the writer commits it, with about the score
    the index gives it once it does, and merged with the indexed windows by score."""
    add(sessions, cid, TEXTS, rng)
    writer.catch_up("c")
    extra = {
        "moss": "Moss grows on the north side of trees where the bark stays damp.",
        "hive": "A hive of bees keeps its honey in wax combs.",
    }
    add(sessions, cid, extra, rng)
    with transaction(sessions) as s:
        seq = s.get_one(Collection, cid).seq
        reader = tail_reader(s, cid)
        k = key(sessions, cid)
        assert lexical.search("c", k, "damp bark moss", 10) == ([], [])
        ids, before = lexical.search("c", k, "damp bark moss", 10, tail=(seq, reader))
        assert set(external(sessions, ids)) == {"moss"}
        mixed, _ = lexical.search("c", k, "bees hive flowers", 10, tail=(seq, reader))
        assert {"bees", "hive"} <= set(external(sessions, mixed))
        # Filtered to documents: the tail obeys it too.
        with_doc = s.scalar(select(Document.id).where(Document.external_id == "bees"))
        only, _ = lexical.search("c", k, "bees hive", 10, [with_doc], tail=(seq, reader))
        assert set(external(sessions, only)) == {"bees"}
    writer.catch_up("c")
    ids_after, after = lexical.search("c", k, "damp bark moss", 10)
    assert ids_after[:1] == ids[:1]
    assert after[0] == pytest.approx(before[0], rel=0.15)
    # Nothing is held above the new watermark: the same query gives the index's answer.
    with transaction(sessions) as s:
        again = lexical.search("c", k, "damp bark moss", 10, tail=(seq, tail_reader(s, cid)))
    assert again == (ids_after, after)


def test_tail_scoring_is_bm25_on_the_given_statistics() -> None:
    windows = [TailWindow(1, 10, Counter(["a", "b"]), 2), TailWindow(2, 11, Counter("bbc"), 3)]
    tail = Tail("k", 0, 2, windows)
    ids, scores = score(tail, ["b"], indexed=8, indexed_freq=lambda t: 3)
    # df = 3 + 2 of 10 windows; average length 2.5.
    idf = math.log(1 + (10 - 5 + 0.5) / (5 + 0.5))
    first = idf * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3 / 2.5))
    assert ids == [2, 1] and scores[0] == pytest.approx(first)
    assert score(tail, ["c"], 8, lambda t: 0, docs={10}) == ([], [])
    assert score(tail, [], 8, lambda t: 0) == ([], [])
