"""Submit an index job: stream the corpus into SQL and hand batches on as they form.

This is the one submission path, for the CLI, the HTTP API (through ``embedq.tasks.uploads``) and
the evaluation job: ``run_ingest`` streams records into SQL and hands each batch to the
dispatcher. With a broker nothing here waits on a worker: batches go out within the job's
window and the job id comes back at ingest speed (``follow`` watches it); embedded, every
batch runs here, then the index catches up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO

from embedq.storage.db import describe_error, transaction
from embedq.storage.jobs import create_job, fail_job, fail_quietly
from embedq.storage.models import Collection, Job
from embedq.storage.readers import CorpusError, Record, Rejected, read_corpus
from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
from embedq.tasks.dispatch import Dispatcher, dispatcher_for
from embedq.tasks.errors import BadInput
from embedq.tasks.indexing import PendingBatch, finish, ingest
from embedq.tasks.logs import log_context
from embedq.tasks.progress import JobBar, estimate_records
from embedq.tasks.runtime import Runtime

FILE_GROUP_BATCHES = 16
"""Batches written per transaction when reading files (which never block between records):
a commit per batch costs more than the batch's rows on PostgreSQL."""
PIPED_BATCH_DOCS = 64
"""Documents a batch waits for when they come through a pipe (which may be slow): its records
are handed on after at most this many, not after a task's full token budget."""


def _show(rt: Runtime, job_id: str, bar: JobBar) -> Job:
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
    bar.show(job)
    return job


def start_index_job(rt: Runtime, coll: Collection, params: dict[str, Any]) -> str:
    """A queued index job for the collection; returns its id."""
    with transaction(rt.sessions) as session:
        return create_job(session, "index", collection_id=coll.id, params=params)


def run_ingest(
    rt: Runtime,
    dispatcher: Dispatcher,
    job_id: str,
    collection: str,
    items: Iterable[Record | Rejected],
    after_batch: Callable[[], object] | None = None,
    *,
    piped: bool = False,
) -> None:
    """Stream ``items`` into the job, hand each batch on, seal the job and finish it if it
    can (embedded, it can: every batch ran). A corpus that cannot be read fails the job.
    ``piped``: records may come slowly (stdin), so each batch is handed on as it forms."""
    try:
        with dispatcher.ingesting(job_id, collection) as on_batch:

            def each(batch: PendingBatch) -> None:
                on_batch(batch)
                if after_batch is not None:
                    after_batch()

            ingest(
                rt,
                job_id,
                items,
                each,
                batch_docs=min(rt.settings.batch_docs, PIPED_BATCH_DOCS) if piped else None,
                group_batches=1 if piped else FILE_GROUP_BATCHES,
                task_tokens=dispatcher.task_tokens,
            )
    except (CorpusError, BadInput) as exc:
        with transaction(rt.sessions) as session:
            fail_job(session, job_id, str(exc))
        raise BadInput(str(exc)) from exc
    except BaseException as exc:
        # A storage error (or any other) must not leave the job running.
        fail_quietly(rt.sessions, job_id, describe_error(exc))
        raise
    finish(rt, job_id)


def submit_index_job(
    rt: Runtime,
    spec: CollectionSpec,
    paths: Sequence[str],
    *,
    fmt: str | None = None,
    stdin: BinaryIO | None = None,
    stdin_id: str | None = None,
    progress: bool = True,
) -> str:
    """Create the job and ingest ``paths``; returns the job id."""
    coll = ensure_collection(rt, spec)
    job_id = start_index_job(rt, coll, {"paths": list(paths), "format": fmt})
    estimate = estimate_records(paths, fmt) if progress else None
    bar = JobBar(f"indexing {coll.name}", enabled=progress, estimate=estimate)
    try:
        records = read_corpus(paths, fmt=fmt, stdin=stdin, stdin_id=stdin_id)
        with log_context(job_id=job_id, collection=coll.name):
            run_ingest(
                rt,
                dispatcher_for(rt),
                job_id,
                coll.name,
                records,
                (lambda: _show(rt, job_id, bar)) if progress else None,
                piped=stdin is not None,
            )
        if progress:
            _show(rt, job_id, bar)  # the last batch settled after the last update
    finally:
        bar.close()
    return job_id


FIRST_POLL_S = 0.02
"""The first wait between polls of a followed job; each next wait is half as long again, up
to the caller's interval, so a short job is seen finished within a few hundredths of a
second and a long one costs a read every ``interval``."""


def follow(rt: Runtime, job_id: str, *, progress: bool = True, interval: float = 0.25) -> Job:
    """Poll the job until it has finished, with a progress bar; returns the final row."""
    bar = JobBar(f"job {job_id[:8]}", enabled=progress)
    wait = min(FIRST_POLL_S, interval)
    try:
        while True:
            job = _show(rt, job_id, bar)
            if job.status.finished:
                return job
            time.sleep(wait)
            wait = min(wait * 1.5, interval)
    finally:
        bar.close()
