"""Records that arrive over HTTP: a JSON request's documents or an NDJSON upload.

Both are spooled to ``<data dir>/uploads/<job id>.jsonl`` (fsynced) and the request answers
as soon as they are durable; ``ingest_file`` then streams the spool into SQL through the
one submission path (``embedq.tasks.producer.run_ingest``): on a ``default`` worker with a broker,
on the API's background thread embedded. A spool is removed once read.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from embedq.storage.db import describe_error, transaction
from embedq.storage.jobs import add_errors, fail_job, lease_held, renew_lease, take_lease
from embedq.storage.models import Collection, Job, JobStatus
from embedq.storage.readers import Record, Rejected, read_corpus, record_from_object
from embedq.tasks import lookup, names
from embedq.tasks.dispatch import Dispatcher, Work
from embedq.tasks.errors import TooLarge, Unavailable
from embedq.tasks.producer import run_ingest, start_index_job
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)

UPLOAD_FORMAT = "jsonl"
REQUEST_SOURCE = "request"
"""The ``source`` of errors for records sent in a JSON request body."""
MAX_DOCUMENTS = 10_000
"""Documents accepted in one JSON request; larger corpora go through an NDJSON upload."""
MAX_RECORD_BYTES = 8 * 1024 * 1024
"""Largest single record: an NDJSON line of an upload, or a record's title and text in UTF-8
in a JSON request. About two million tokens, thousands of windows."""


def uploads_dir(rt: Runtime) -> Path:
    return rt.settings.data_dir / "uploads"


# ------------------------------------------------------------------------- JSON request bodies


def validate_records(documents: Iterable[Any]) -> Iterator[Record | Rejected]:
    """Check each object as a JSONL line is checked; a repeated id is rejected, as in a file.

    A record whose title and text exceed ``MAX_RECORD_BYTES`` in UTF-8 is rejected too.
    """
    seen: set[str] = set()
    for line, obj in enumerate(documents, 1):
        item = record_from_object(obj, source=REQUEST_SOURCE, line=line)
        if isinstance(item, Record):
            size = _utf8_size(item.text) + _utf8_size(item.title or "")
            if size > MAX_RECORD_BYTES:
                reason = f"text too large ({size} bytes; at most {MAX_RECORD_BYTES})"
                item = Rejected(item.source, item.line, reason, item.id)
            elif item.id in seen:
                item = Rejected(item.source, item.line, "duplicate id", item.id)
            else:
                seen.add(item.id)
        yield item


def _utf8_size(text: str) -> int:
    # At most 4 bytes a character: only long texts need encoding to be measured.
    if 4 * len(text) <= MAX_RECORD_BYTES:
        return len(text)
    return len(text.encode("utf-8", errors="surrogatepass"))


def submit_records(rt: Runtime, dispatcher: Dispatcher, name: str, documents: list[Any]) -> str:
    """Start an index job for documents sent in a request; returns its id once they are
    durable (rejected ones as the job's errors, the others in its spool)."""
    if len(documents) > MAX_DOCUMENTS:
        raise TooLarge(
            f"{len(documents)} documents in one request; at most {MAX_DOCUMENTS} "
            f"(upload larger corpora as NDJSON to /v1/collections/{name}/uploads)"
        )
    coll = _collection(rt, name)
    job_id = start_index_job(rt, coll, {"source": REQUEST_SOURCE, "records": len(documents)})
    path = _spool_path(rt, job_id)
    errors = []
    with path.open("w", encoding="utf-8") as fh:
        for item in validate_records(documents):
            if isinstance(item, Rejected):
                errors.append(
                    {"line": item.line, "id": item.id, "reason": item.reason, "source": item.source}
                )
                continue
            row = {"id": item.id, "text": item.text, "title": item.title, "meta": item.meta}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    ingest_upload(rt, dispatcher, job_id, path, errors)
    return job_id


# ------------------------------------------------------------------------------ NDJSON uploads


def start_upload(rt: Runtime, name: str) -> tuple[str, Path]:
    """Create the index job of an upload; returns its id and where the upload is written."""
    coll = _collection(rt, name)
    job_id = start_index_job(rt, coll, {"source": "upload", "format": UPLOAD_FORMAT})
    return job_id, _spool_path(rt, job_id)


def abandon_upload(rt: Runtime, job_id: str, path: Path, reason: str) -> None:
    path.unlink(missing_ok=True)
    with transaction(rt.sessions) as session:
        fail_job(session, job_id, reason)


def ingest_upload(
    rt: Runtime,
    dispatcher: Dispatcher,
    job_id: str,
    path: Path,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Hand a stored spool on to be ingested: to a worker, or to this process's background.

    ``errors`` are records refused before they reached the spool; they are the job's first
    errors.
    """
    if errors:
        with transaction(rt.sessions, write=True) as session:
            add_errors(session, job_id, errors)
    work = Work(
        job_id,
        names.INGEST_FILE,
        (job_id, str(path), UPLOAD_FORMAT),
        partial(ingest_file, rt, dispatcher, job_id, str(path), UPLOAD_FORMAT),
    )
    try:
        dispatcher.start(work)
    except Unavailable:
        path.unlink(missing_ok=True)
        raise


def ingest_file(
    rt: Runtime, dispatcher: Dispatcher, job_id: str, path: str, fmt: str | None
) -> None:
    """Ingest a spooled corpus file for a queued job once, then finish it if it can.

    The ingestion holds a lease on the job in SQL, renewed as batches form: a second
    delivery of the task while the first is alive (a broker redelivering a long task)
    leaves it alone. A second delivery after the first died mid-way does not ingest again,
    which would count records twice: the job is failed and the upload must be resubmitted.
    Spools under the data folder are removed once read.
    """
    with rt.sessions() as session:
        job = session.get(Job, job_id)
        status = job.status if job else None
        coll = session.get(Collection, job.collection_id) if job and job.collection_id else None
    if status == JobStatus.running:
        with rt.sessions() as session:
            alive = lease_held(session, job_id)
        if alive:
            log.info("job %s is being ingested by another delivery", job_id)
        else:
            with transaction(rt.sessions) as session:
                fail_job(session, job_id, "ingestion was interrupted; submit the file again")
        return
    if status != JobStatus.queued or coll is None or not _take_lease(rt, job_id):
        return
    try:
        records = read_corpus([path], fmt=fmt)
        run_ingest(rt, dispatcher, job_id, coll.name, records, _Renewal(rt, job_id))
    except Exception as exc:
        with transaction(rt.sessions) as session:
            fail_job(session, job_id, f"cannot ingest the upload: {describe_error(exc)}")
        raise
    finally:
        spool = Path(path)
        if spool.parent == uploads_dir(rt):
            spool.unlink(missing_ok=True)


def _take_lease(rt: Runtime, job_id: str) -> bool:
    with transaction(rt.sessions, write=True) as session:
        return take_lease(session, job_id, rt.settings.ingest_lease_s)


class _Renewal:
    """Renew the ingestion lease after a batch once a third of it has passed."""

    def __init__(self, rt: Runtime, job_id: str) -> None:
        self.rt = rt
        self.job_id = job_id
        self.renewed = time.monotonic()

    def __call__(self) -> None:
        lease = self.rt.settings.ingest_lease_s
        if time.monotonic() - self.renewed < lease / 3:
            return
        with transaction(self.rt.sessions, write=True) as session:
            renew_lease(session, self.job_id, lease)
        self.renewed = time.monotonic()


def _collection(rt: Runtime, name: str) -> Collection:
    with rt.sessions() as session:
        return lookup.collection(session, name)


def _spool_path(rt: Runtime, job_id: str) -> Path:
    folder = uploads_dir(rt)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job_id}.{UPLOAD_FORMAT}"
