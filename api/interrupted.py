"""Jobs that an embedded API process was running when it stopped.

Without a broker the API runs the index jobs it accepts (documents sent in a request, NDJSON
uploads) on a thread of its own; nothing else ever runs them. A process that was stopped or
killed leaves such a job ``queued`` or ``running`` for good, and an upload that never ran
leaves its file in ``uploads/``. When the API starts again on the embedded default, those
jobs are failed with a reason that says so and their files are removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from embedq.storage.db import transaction
from embedq.storage.jobs import ACTIVE, fail_job
from embedq.storage.models import Job
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)

API_SOURCES = frozenset({"request", "upload"})
"""``params.source`` of the index jobs only an API process runs."""

INTERRUPTED = "interrupted: the API server stopped before the job finished; submit it again"


def fail_interrupted(rt: Runtime) -> list[str]:
    """On the embedded default, fail the API's unfinished jobs and remove orphan uploads;
    returns the ids failed. With a broker, workers own every job: nothing is touched."""
    if rt.settings.broker_url:
        return []
    with transaction(rt.sessions, write=True) as session:
        active = session.scalars(select(Job).where(Job.status.in_(ACTIVE), Job.kind == "index"))
        failed = [job.id for job in active if (job.params or {}).get("source") in API_SOURCES]
        for job_id in failed:
            fail_job(session, job_id, INTERRUPTED)
    if failed:
        log.warning("failed %d job(s) interrupted by the last stop: %s", len(failed), failed)
    remove_orphan_uploads(rt)
    return failed


def remove_orphan_uploads(rt: Runtime) -> list[Path]:
    """Delete files in ``uploads/`` whose job is not queued or running."""
    folder = rt.settings.data_dir / "uploads"
    if not folder.is_dir():
        return []
    files = {path.stem: path for path in folder.iterdir() if path.is_file()}
    if not files:
        return []
    with rt.sessions() as session:
        live = set(session.scalars(select(Job.id).where(Job.id.in_(files), Job.status.in_(ACTIVE))))
    removed = [path for stem, path in files.items() if stem not in live]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
