"""Ingestion cuts a corpus into embed tasks by estimated tokens as well as by documents, on
the embedded default (SQLite): sentences travel many to a task, long documents few."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from embedq.storage.models import JobBatch
from embedq.storage.readers import read_corpus
from embedq.storage.schema import ensure_ready
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.indexing import PendingBatch, ingest, read_batch
from embedq.tasks.producer import start_index_job
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings


def test_batches_close_at_the_document_cap_or_the_token_budget(tmp_path: Path) -> None:
    short = [{"id": f"s{n}", "text": f"Sentence number {n:03d} is short here."} for n in range(120)]
    long = [{"id": f"l{n}", "text": "word " * 480} for n in range(10)]  # 2,400 chars, 602 tokens
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in short + long))
    rt = Runtime(Settings(data_dir=tmp_path / "data", batch_docs=50, task_tokens=1_000))
    ensure_ready(rt.sessions.kw["bind"])
    job_id = start_index_job(rt, ensure_collection(rt, CollectionSpec("b")), {})
    handed: list[PendingBatch] = []
    ingest(rt, job_id, read_corpus([str(corpus)]), handed.append)
    with rt.sessions() as session:
        batches = session.execute(
            select(JobBatch.id, JobBatch.size, JobBatch.document_ids)
            .where(JobBatch.job_id == job_id)
            .order_by(JobBatch.id)
        ).all()
    assert [b.id for b in batches] == [b.batch_id for b in handed]
    # Each batch is handed on with its documents as SQL holds them: the embedded path cuts
    # them without reading them back.
    for batch in handed:
        again = read_batch(rt, batch.batch_id)
        assert again is not None and sorted(again.docs) == batch.docs
        assert replace(again, docs=batch.docs) == batch
    # 50 sentences (about 12 tokens each) hit the document cap; 20 sentences and two long
    # documents pass 1,000 tokens; then two long documents a task.
    assert [b.size for b in batches] == [50, 50, 22, 2, 2, 2, 2]
    ids = [i for b in batches for i in b.document_ids]
    assert len(ids) == len(set(ids)) == 130


def test_an_embedded_task_holds_at_least_one_forward_pass_unless_its_size_is_set(
    tmp_path: Path,
) -> None:
    from embedq.tasks.dispatch import InlineDispatcher

    model = "default"
    # A device whose forward pass is larger than the default task (as a GPU's 65,536
    # tokens): the default task grows to one pass.
    gpu_like = Runtime(Settings(data_dir=tmp_path / "a", batch_tokens=65_536))
    assert InlineDispatcher(gpu_like).task_tokens(model) == 65_536
    # A CPU's pass (4,096 tokens) is smaller than the default task: the default stands.
    cpu = Runtime(Settings(data_dir=tmp_path / "b", device="cpu"))
    assert InlineDispatcher(cpu).task_tokens(model) == cpu.settings.task_tokens == 16_384
    # A size the operator set is kept, even below one pass.
    chosen = Runtime(Settings(data_dir=tmp_path / "c", task_tokens=1_000, batch_tokens=65_536))
    assert InlineDispatcher(chosen).task_tokens(model) == 1_000


def test_ingest_sizes_tasks_by_the_budget_the_dispatcher_gives_for_the_collections_model(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"s{n}", "text": f"Sentence number {n:03d} is short here."} for n in range(120)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rt = Runtime(Settings(data_dir=tmp_path / "data", batch_docs=50, task_tokens=256))
    ensure_ready(rt.sessions.kw["bind"])
    coll = ensure_collection(rt, CollectionSpec("b"))
    job_id = start_index_job(rt, coll, {})
    asked: list[str] = []

    def budget(model: str) -> int:
        asked.append(model)
        return 10_000_000

    ingest(rt, job_id, read_corpus([str(corpus)]), lambda _: None, task_tokens=budget)
    with rt.sessions() as session:
        sizes = session.scalars(
            select(JobBatch.size).where(JobBatch.job_id == job_id).order_by(JobBatch.id)
        ).all()
    assert asked == [coll.model]
    # The settings' 256 tokens would close a task every 18 sentences; the budget given
    # leaves only the document cap.
    assert list(sizes) == [50, 50, 20]


def test_the_first_group_is_one_batch_and_later_groups_stop_at_the_group_token_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedq.storage.readers import Record
    from embedq.tasks import indexing

    monkeypatch.setattr(indexing, "GROUP_TOKENS", 3_000)  # three batches of 1,000 tokens
    rt = Runtime(Settings(data_dir=tmp_path / "data", task_tokens=1_000))
    ensure_ready(rt.sessions.kw["bind"])
    job_id = start_index_job(rt, ensure_collection(rt, CollectionSpec("g")), {})
    read = 0

    def records() -> Iterator[Record]:
        nonlocal read
        for n in range(20):
            read += 1
            yield Record(f"l{n}", "word " * 480, None, None, "c.jsonl", n + 1)  # 602 tokens

    handed_after: list[int] = []
    ingest(rt, job_id, records(), lambda _: handed_after.append(read), group_batches=16)
    with rt.sessions() as session:
        sizes = session.scalars(
            select(JobBatch.size).where(JobBatch.job_id == job_id).order_by(JobBatch.id)
        ).all()
    # The first batch (two documents pass 1,000 tokens) is handed on as soon as it is read;
    # then groups of 3,000 tokens (five documents, three batches) instead of sixteen batches.
    assert handed_after == [2, 7, 7, 7, 12, 12, 12, 17, 17, 17, 20, 20]
    assert list(sizes) == [2, 2, 2, 1, 2, 2, 1, 2, 2, 1, 2, 1]


def test_a_group_is_stored_under_sqlites_write_lock_taken_at_its_start(tmp_path: Path) -> None:
    """The producer's transaction reads the collection row before it writes documents. On
    SQLite a plain BEGIN would start a read snapshot there, and a chunk writer committing in
    between would make its first write fail with "database is locked"; the group takes the
    write lock at BEGIN instead, and the other writer waits."""
    import threading

    from sqlalchemy import event, update

    from embedq.storage.models import Collection
    from embedq.storage.readers import Record

    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    ensure_ready(rt.sessions.kw["bind"])
    job_id = start_index_job(rt, ensure_collection(rt, CollectionSpec("w")), {})
    read, written = threading.Event(), threading.Event()

    def pause(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SELECT collections.id \nFROM") and not read.is_set():
            read.set()
            written.wait(5)

    def other_writer() -> None:
        read.wait(5)
        other = create_engine(
            f"sqlite:///{tmp_path / 'data' / 'embedq.db'}",
            poolclass=NullPool,
            connect_args={"timeout": 1},
        )
        try:
            with other.begin() as conn:
                conn.execute(update(Collection).values(seq=Collection.seq + 1))  # a real change
        except OperationalError:
            pass  # it waited for the producer's lock, up to its own timeout
        finally:
            written.set()
            other.dispose()

    event.listen(rt.sessions.kw["bind"], "after_cursor_execute", pause)
    thread = threading.Thread(target=other_writer)
    thread.start()
    records = [Record(f"d{n}", f"text {n}", None, None, "c.jsonl", n + 1) for n in range(3)]
    ingest(rt, job_id, records, lambda _: None)
    thread.join(10)
    assert read.is_set() and written.is_set()
    with rt.sessions() as session:
        assert session.scalars(select(JobBatch.size).where(JobBatch.job_id == job_id)).all() == [3]
