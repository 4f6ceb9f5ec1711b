"""Finding a named collection or a job, or saying clearly that there is none."""

from __future__ import annotations

from sqlalchemy.orm import Session

from embedq.storage.collections import find_collection
from embedq.storage.models import Collection, Job
from embedq.tasks.errors import NotFound


def collection(session: Session, name: str) -> Collection:
    """The collection called ``name``; NotFound when there is none."""
    coll = find_collection(session, name)
    if coll is None:
        raise NotFound(f"no collection named {name!r}")
    return coll


def job(session: Session, job_id: str) -> Job:
    """The job with this id; NotFound when there is none."""
    found = session.get(Job, job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}")
    return found
