"""Per-job leases in SQL: one runner at a time for a one-step (analysis) job.

Celery delivers ``analyse`` tasks at least once (acks late): a task that outlives the broker's
visibility timeout is delivered again while the first delivery still runs, and both would
compute and store the result. The runner takes the job's lease first (an atomic UPDATE that
succeeds only when no other live lease holds the job) and renews it while it works; a second
delivery finds a live lease and does nothing. A runner that died stops renewing: its lease
expires after ``LEASE_S`` and a later delivery takes the job over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.db import transaction
from embedq.storage.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

LEASE_S = 120.0
"""How long a lease lasts without renewal."""
RENEW_S = 30.0
"""How often a holder renews it."""

_ACTIVE = (JobStatus.queued, JobStatus.running)


def new_owner() -> str:
    """A name for one run: host, process and a random part (two runs never share one)."""
    return f"{socket.gethostname()[:180]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def take_lease(session: Session, job_id: str, owner: str, lease_s: float = LEASE_S) -> bool:
    """Take or renew the job's lease for ``owner``; False while another owner's lease is live
    or the job has finished."""
    now = utcnow()
    result: Any = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(_ACTIVE),
            or_(Job.lease_until.is_(None), Job.lease_until < now, Job.lease_owner == owner),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
    )
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


def release_lease(session: Session, job_id: str, owner: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


@contextmanager
def held_lease(
    factory: sessionmaker[Session],
    job_id: str,
    *,
    lease_s: float = LEASE_S,
    renew_s: float = RENEW_S,
) -> Iterator[bool]:
    """Hold the job's lease for the block, renewing it on a thread; yields False (and holds
    nothing) when another live runner has it."""
    owner = new_owner()
    with transaction(factory, write=True) as session:
        taken = take_lease(session, job_id, owner, lease_s)
    if not taken:
        yield False
        return
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(factory, job_id, owner, lease_s, renew_s, stop), daemon=True
    )
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        try:
            with transaction(factory, write=True) as session:
                release_lease(session, job_id, owner)
        except SQLAlchemyError as exc:
            log.warning("cannot release the lease of job %s (it expires): %s", job_id, exc)


def _renew(
    factory: sessionmaker[Session],
    job_id: str,
    owner: str,
    lease_s: float,
    renew_s: float,
    stop: threading.Event,
) -> None:
    while not stop.wait(renew_s):
        try:
            with transaction(factory, write=True) as session:
                if not take_lease(session, job_id, owner, lease_s):
                    return  # finished, or taken over after an expiry: nothing left to hold
        except SQLAlchemyError as exc:
            log.warning("cannot renew the lease of job %s: %s", job_id, exc)
