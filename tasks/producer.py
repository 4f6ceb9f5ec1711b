"""Submit an index job: stream the corpus into SQL and hand batches on as they form.

With a broker the batches go to the ``embed`` queue and this returns the job id at once
(``follow`` watches it); without one every batch runs here, then the index catches up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import BinaryIO

from tqdm import tqdm

from storage.jobs import fail_job
from storage.models import Job
from storage.readers import CorpusError, read_corpus
from tasks.dispatch import InlineDispatcher, dispatcher_for
from tasks.indexing import (
    CollectionSpec,
    JobInputError,
    ensure_collection,
    finish,
    ingest,
    start_index_job,
)
from tasks.runtime import Runtime


def _bar(desc: str, progress: bool) -> tqdm:
    return tqdm(desc=desc, unit="doc", disable=not progress, file=sys.stderr, dynamic_ncols=True)


def _show(rt: Runtime, job_id: str, bar: tqdm) -> Job:
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
    bar.total = job.total
    bar.n = job.done + job.failed
    bar.refresh()
    return job


def submit_index_job(
    rt: Runtime,
    spec: CollectionSpec,
    paths: Sequence[str],
    *,
    fmt: str | None = None,
    stdin: BinaryIO | None = None,
    progress: bool = True,
) -> str:
    """Create the job and ingest ``paths``; returns the job id."""
    coll = ensure_collection(rt, spec)
    job_id = start_index_job(rt, coll, {"paths": list(paths), "format": fmt})
    dispatcher = dispatcher_for(rt, job_id)
    inline = isinstance(dispatcher, InlineDispatcher)
    bar = _bar(f"{'indexing' if inline else 'queueing'} {coll.name}", progress)

    def dispatch(batch_id: int) -> None:
        dispatcher.embed(batch_id)
        _show(rt, job_id, bar)

    # Embedded: cut the next batch into windows while the previous one is in its forward pass.
    overlap = dispatcher.overlapped() if isinstance(dispatcher, InlineDispatcher) else nullcontext()
    try:
        with overlap:
            ingest(rt, job_id, read_corpus(paths, fmt=fmt, stdin=stdin), dispatch)
    except (CorpusError, JobInputError) as exc:
        with rt.sessions.begin() as session:
            fail_job(session, job_id, str(exc))
        raise JobInputError(str(exc)) from exc
    finally:
        bar.close()
    if inline:
        dispatcher.catch_up(coll.name)
    finish(rt, job_id)
    return job_id


def follow(rt: Runtime, job_id: str, *, progress: bool = True, interval: float = 0.5) -> Job:
    """Poll the job until it has finished, with a progress bar; returns the final row."""
    bar = _bar(f"job {job_id[:8]}", progress)
    try:
        while True:
            job = _show(rt, job_id, bar)
            if job.status.finished:
                return job
            time.sleep(interval)
    finally:
        bar.close()
