"""Jobs as a user finds them: filtered, newest first, in cursor pages; and a job named by a
unique prefix of its id (the CLI accepts those)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from embedq.storage.collections import find_collection
from embedq.storage.jobs import job_views
from embedq.storage.listing import JobFilter, JobMark, job_ids_starting, job_page
from embedq.storage.models import JobStatus
from embedq.tasks.cursors import BadCursor, decode_cursor, encode_cursor
from embedq.tasks.errors import BadInput, NotFound
from embedq.tasks.runtime import Runtime

CURSOR_KIND = "jobs"
JOB_ID = re.compile(r"[0-9a-f]{1,64}")
MAX_LIMIT = 1000
NO_COLLECTION = -1


class JobNotFound(NotFound):
    """No job has that id (or an id starting with it)."""


class AmbiguousJobId(BadInput):
    """More than one job id starts with the prefix given."""


def _statuses(value: str | None) -> list[JobStatus] | None:
    if not value:
        return None
    out = []
    for part in value.split(","):
        try:
            out.append(JobStatus(part.strip()))
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise BadInput(f"unknown job status {part.strip()!r}; use {known}") from None
    return out


def _kinds(value: str | None) -> list[str] | None:
    return [k.strip() for k in value.split(",") if k.strip()] if value else None


def _mark(cursor: str) -> JobMark:
    when, job_id = decode_cursor(CURSOR_KIND, cursor, 2)
    try:
        created = datetime.fromisoformat(when)
    except (TypeError, ValueError) as exc:
        raise BadCursor(f"invalid cursor {cursor[:40]!r}") from exc
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise BadCursor(f"invalid cursor {cursor[:40]!r}")
    return JobMark(created, job_id)


def _stamp(value: datetime) -> str:
    # SQLite hands back naive datetimes; every stamp is UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def list_jobs(
    rt: Runtime,
    *,
    status: str | None = None,
    collection: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of jobs, newest first: ``{"jobs": [...], "next": cursor | None}``.

    ``status`` and ``kind`` may list several values separated by commas. Jobs created after
    the first page was read never shift later pages: a cursor marks a place in time.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    statuses, kinds = _statuses(status), _kinds(kind)
    before = _mark(cursor) if cursor else None
    with rt.sessions() as session:
        collection_id = None
        if collection:
            coll = find_collection(session, collection)
            collection_id = coll.id if coll is not None else NO_COLLECTION
        where = JobFilter(statuses, collection_id, kinds)
        rows, more = job_page(session, where, limit=limit, before=before)
        views = job_views(session, rows)
    nxt = None
    if rows and more:
        nxt = encode_cursor(CURSOR_KIND, [_stamp(rows[-1].created_at), rows[-1].id])
    return {"jobs": views, "next": nxt}


def resolve_job_id(rt: Runtime, prefix: str) -> str:
    """The id of the one job whose id is or starts with ``prefix``."""
    prefix = prefix.strip().lower()
    if not prefix:
        raise JobNotFound("no job id given")
    if not JOB_ID.fullmatch(prefix):
        raise JobNotFound(f"no job {prefix!r}: job ids are hexadecimal")
    with rt.sessions() as session:
        found = job_ids_starting(session, prefix, limit=6)
    if not found:
        raise JobNotFound(f"no job {prefix!r}")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise AmbiguousJobId(
            f"job id prefix {prefix!r} matches more than one job ({shown}): give more of it"
        )
    return found[0]
