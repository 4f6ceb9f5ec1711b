"""embedq.storage.stats on SQLite and PostgreSQL: the counts behind the API's /metrics."""

from __future__ import annotations

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.db import transaction
from embedq.storage.index_store import IndexStore
from embedq.storage.jobs import add_batch, create_job, db_now, mark_queued, settle_batch
from embedq.storage.models import JobBatch
from embedq.storage.stats import batch_counts, collection_rows, job_counts
from tests.unit.test_storage import index_texts, make_collection


def test_counts_by_job_batch_state_and_collection(
    sessions: sessionmaker[Session], cid: int, rng: np.random.Generator, store: IndexStore
) -> None:
    pending = index_texts(sessions, cid, {"a": "one", "b": "two", "c": "three"}, rng, n=2)
    make_collection(sessions, "empty")
    with transaction(sessions, write=True) as s:
        job = create_job(s, "index", collection_id=cid, params={})
        create_job(s, "cluster", collection_id=cid, params={})
        waiting, queued, running, done = (add_batch(s, job, pending[:1]) for _ in range(4))
    with transaction(sessions, write=True) as s:
        for batch in (queued, running):
            mark_queued(s, batch)
    with transaction(sessions, write=True) as s:
        s.execute(update(JobBatch).where(JobBatch.id == running).values(started_at=db_now(s)))
        settle_batch(s, done)
    with sessions() as s:
        assert job_counts(s) == {("index", "queued"): 1, ("cluster", "queued"): 1}
        assert batch_counts(s) == {
            "waiting": 1,
            "queued": 1,
            "running": 1,
            "done": 1,
            "failed": 0,
        }
        rows = {r.name: r for r in collection_rows(s, store)}
    assert waiting  # the batch nobody sent
    assert (rows["c"].documents, rows["c"].chunks, rows["c"].indexed) == (3, 6, 0)
    assert rows["c"].unpublished == 6  # nothing published yet: every row waits
    assert (rows["empty"].documents, rows["empty"].chunks, rows["empty"].unpublished) == (0, 0, 0)
