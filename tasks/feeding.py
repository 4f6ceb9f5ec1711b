"""Keeping a job's window of batch messages full: SQL is the queue of record, the broker
holds only a few messages per job.

A producer writes every batch row and returns; it hands on at most ``window`` batches. Each
finished batch hands on the next batch of its job (``feed``), and the reconciler tops up
any job whose window ran short (a worker killed between settling a batch and feeding). So
a job's messages in the broker never exceed its window (plus one per feeder racing), and
jobs interleave: with one worker, each job's next batch queues behind the others' current
ones, round robin.
"""

from __future__ import annotations

from collections.abc import Callable

from embedq.storage.db import transaction
from embedq.storage.jobs import claim_unqueued, in_flight, jobs_to_feed, unqueued
from embedq.storage.models import Job, JobStatus
from embedq.tasks.runtime import Runtime

ACTIVE = (JobStatus.queued, JobStatus.running)


def window(rt: Runtime) -> int:
    """Batch messages one job keeps in the broker: ``EMBEDQ_MAX_PENDING_BATCHES``."""
    return rt.settings.max_pending_batches


def feed(rt: Runtime, job_id: str, send: Callable[[int], object]) -> int:
    """Hand on the job's oldest unqueued batches until its window is full; returns how many
    were sent. Each is claimed in SQL (a conditional stamp) before it is sent, so two
    feeders never send the same batch."""
    with rt.sessions() as session:
        status = session.get(Job, job_id)
        if status is None or status.status not in ACTIVE:
            return 0
        room = window(rt) - in_flight(session, job_id)
        candidates = unqueued(session, job_id, room) if room > 0 else []
    sent = 0
    for batch_id in candidates:
        with transaction(rt.sessions) as session:
            claimed = claim_unqueued(session, batch_id)
        if claimed:
            send(batch_id)
            sent += 1
    return sent


def feed_all(rt: Runtime, send: Callable[[int], object]) -> dict[str, int]:
    """Top up every running job that has batches waiting; {job id: batches sent}."""
    with rt.sessions() as session:
        job_ids = jobs_to_feed(session)
    out = {}
    for job_id in job_ids:
        sent = feed(rt, job_id, send)
        if sent:
            out[job_id] = sent
    return out
