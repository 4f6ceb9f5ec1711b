"""Ingestion cuts a corpus into embed tasks by estimated tokens as well as by documents, on
the embedded default (SQLite): sentences travel many to a task, long documents few."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from embedq.storage.models import JobBatch
from embedq.storage.readers import read_corpus
from embedq.storage.schema import ensure_ready
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.indexing import ingest
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
    handed: list[int] = []
    ingest(rt, job_id, read_corpus([str(corpus)]), handed.append)
    with rt.sessions() as session:
        batches = session.execute(
            select(JobBatch.id, JobBatch.size, JobBatch.document_ids)
            .where(JobBatch.job_id == job_id)
            .order_by(JobBatch.id)
        ).all()
    assert [b.id for b in batches] == handed
    # 50 sentences (about 12 tokens each) hit the document cap; 20 sentences and two long
    # documents pass 1,000 tokens; then two long documents a task.
    assert [b.size for b in batches] == [50, 50, 22, 2, 2, 2, 2]
    ids = [i for b in batches for i in b.document_ids]
    assert len(ids) == len(set(ids)) == 130
