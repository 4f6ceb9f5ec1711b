"""The embedded indexer cuts the next batch into windows while the previous one is in its
forward pass, catches the indexes up meanwhile, and stores exactly what the
one-batch-at-a-time path stores."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from embedq.storage.models import Chunk, Collection, Document
from embedq.storage.schema import upgrade
from embedq.tasks import indexing
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.dispatch import InlineDispatcher
from embedq.tasks.indexing import ingest
from embedq.tasks.producer import start_index_job, submit_index_job
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings
from tests.integration.conftest import write_jsonl

pytestmark = pytest.mark.integration
DOCS = [
    {"id": f"d{i}", "text": f"Document {i} is about topic {i % 3}. " * (5 + 20 * i)}
    for i in range(9)
]


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=tmp_path / "data", batch_docs=3))
    upgrade(runtime.sessions.kw["bind"])
    return runtime


def stored(rt: Runtime, collection: str) -> dict[tuple[str, int], np.ndarray]:
    with rt.sessions() as session:
        rows = session.execute(
            select(Document.external_id, Chunk.window, Chunk.vector)
            .join(Document, Document.id == Chunk.document_id)
            .join(Collection, Collection.id == Chunk.collection_id)
            .where(Collection.name == collection)
        ).all()
    return {(r.external_id, r.window): np.frombuffer(r.vector, dtype=np.float32) for r in rows}


def test_the_next_batch_is_cut_during_the_forward_pass(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    cuts: list[tuple[int, str]] = []
    stores: list[tuple[int, str, bool]] = []
    cut_done = threading.Condition()
    cut_read, store_batch = indexing.cut, indexing.store_batch
    catch_ups: list[tuple[bool, str]] = []
    catch_up = rt.writer.catch_up

    def cut(runtime: Runtime, read: Any) -> Any:
        with cut_done:
            cuts.append((read.batch_id, threading.current_thread().name))
            cut_done.notify_all()
        return cut_read(runtime, read)

    def caught_up(name: str, **kwargs: Any) -> Any:
        catch_ups.append((kwargs.get("publish", True), threading.current_thread().name))
        return catch_up(name, **kwargs)

    def store(runtime: Runtime, batch: Any) -> int:
        def later() -> bool:
            return any(b > batch.batch_id for b, _ in cuts)

        # Before embedding a batch, wait for the producer thread to cut the next one: it
        # only can if cutting overlaps the forward pass (the last batch has no next one).
        with cut_done:
            cut_done.wait_for(lambda: later() or len(cuts) == 3, timeout=60)
            stores.append((batch.batch_id, threading.current_thread().name, later()))
        return store_batch(runtime, batch)

    monkeypatch.setattr(indexing, "cut", cut)
    monkeypatch.setattr(indexing, "store_batch", store)
    monkeypatch.setattr(rt.writer, "catch_up", caught_up)
    monkeypatch.setattr("embedq.tasks.dispatch.CATCH_UP_EVERY_S", 0.0)
    job_id = submit_index_job(rt, CollectionSpec("piped"), [str(corpus)], progress=False)

    assert [b for b, _ in cuts] == [b for b, _, _ in stores] and len(cuts) == 3
    assert all(name.startswith("embedq-cut") for _, name in cuts)
    assert all(name.startswith("embedq-forward") for _, name, _ in stores)
    # Every batch but the last overlapped with the cutting of the next one.
    assert [ok for _, _, ok in stores] == [True, True, False]
    with rt.sessions() as session:
        from embedq.storage.models import Job

        job = session.get_one(Job, job_id)
        assert (job.status.value, job.done, job.total) == ("succeeded", 9, 9)
        chunks = session.scalar(
            select(func.count())
            .select_from(Chunk)
            .join(Collection)
            .where(Collection.name == "piped")
        )
    # Meanwhile the index thread applied what was stored to the indexes, unpublished; the
    # end of the job published a snapshot that holds every chunk.
    assert catch_ups[:-1] and all(
        not publish and name.startswith("embedq-index") for publish, name in catch_ups[:-1]
    )
    assert catch_ups[-1] == (True, threading.current_thread().name)
    meta = rt.store.meta("piped")
    assert meta is not None and meta.count == chunks

    # The same documents one batch at a time: the very same chunks and vectors.
    monkeypatch.undo()
    coll = ensure_collection(rt, CollectionSpec("serial"))
    serial_job = start_index_job(rt, coll, {})
    ingest(rt, serial_job, _records(corpus), InlineDispatcher(rt).take)
    piped, serial = stored(rt, "piped"), stored(rt, "serial")
    assert piped.keys() == serial.keys() and len(piped) >= 9
    for key, vector in piped.items():
        np.testing.assert_allclose(vector, serial[key], atol=1e-6)


def _records(path: Path) -> Any:
    from embedq.storage.readers import read_corpus

    return read_corpus([str(path)])


def test_a_failed_catch_up_during_the_job_leaves_the_job_and_its_end_intact(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    catch_up = rt.writer.catch_up
    failed: list[bool] = []

    def flaky(name: str, **kwargs: Any) -> Any:
        if not kwargs.get("publish", True):
            failed.append(True)
            raise OSError("disk full")
        return catch_up(name, **kwargs)

    monkeypatch.setattr(rt.writer, "catch_up", flaky)
    monkeypatch.setattr("embedq.tasks.dispatch.CATCH_UP_EVERY_S", 0.0)
    job_id = submit_index_job(rt, CollectionSpec("flaky"), [str(corpus)], progress=False)
    with rt.sessions() as session:
        from embedq.storage.models import Job

        job = session.get_one(Job, job_id)
        assert (job.status.value, job.done, job.total) == ("succeeded", 9, 9)
    meta = rt.store.meta("flaky")
    assert failed and meta is not None and meta.count == len(stored(rt, "flaky"))


def test_the_cutter_goes_on_while_the_forward_thread_is_busy(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    cuts: list[int] = []
    seen_at_first_store: list[int] = []
    cut_done = threading.Condition()
    cut_read, store_batch = indexing.cut, indexing.store_batch

    def cut(runtime: Runtime, read: Any) -> Any:
        out = cut_read(runtime, read)
        with cut_done:
            cuts.append(read.batch_id)
            cut_done.notify_all()
        return out

    def store(runtime: Runtime, batch: Any) -> int:
        # The first batch's forward pass (or a catch-up after it) takes long: the batches
        # after it are cut meanwhile and wait for the forward thread, in order.
        if not seen_at_first_store:
            with cut_done:
                cut_done.wait_for(lambda: len(cuts) == 3, timeout=30)
                seen_at_first_store.append(len(cuts))
        return store_batch(runtime, batch)

    monkeypatch.setattr(indexing, "cut", cut)
    monkeypatch.setattr(indexing, "store_batch", store)
    job_id = submit_index_job(rt, CollectionSpec("queued"), [str(corpus)], progress=False)
    assert seen_at_first_store == [3]
    with rt.sessions() as session:
        from embedq.storage.models import Job

        job = session.get_one(Job, job_id)
        assert (job.status.value, job.done, job.total) == ("succeeded", 9, 9)
    assert len(stored(rt, "queued")) >= 9


def test_the_forward_thread_goes_on_while_the_indexes_catch_up(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCS)
    stores: list[int] = []
    stored_all = threading.Event()
    during: list[int] = []
    catch_up, store_batch = rt.writer.catch_up, indexing.store_batch

    def store(runtime: Runtime, batch: Any) -> int:
        written = store_batch(runtime, batch)
        stores.append(batch.batch_id)
        if len(stores) == 3:
            stored_all.set()
        return written

    def slow(name: str, **kwargs: Any) -> Any:
        # The first catch-up during the job lasts until every batch is stored: the batches
        # after the first can only be stored if the forward thread does not wait for it.
        if not kwargs.get("publish", True) and not during:
            stored_all.wait(timeout=30)
            during.append(len(stores))
        return catch_up(name, **kwargs)

    monkeypatch.setattr(indexing, "store_batch", store)
    monkeypatch.setattr(rt.writer, "catch_up", slow)
    monkeypatch.setattr("embedq.tasks.dispatch.CATCH_UP_EVERY_S", 0.0)
    job_id = submit_index_job(rt, CollectionSpec("follow"), [str(corpus)], progress=False)
    assert during == [3]
    with rt.sessions() as session:
        from embedq.storage.models import Job

        job = session.get_one(Job, job_id)
        assert (job.status.value, job.done, job.total) == ("succeeded", 9, 9)
    meta = rt.store.meta("follow")
    assert meta is not None and meta.count == len(stored(rt, "follow"))
