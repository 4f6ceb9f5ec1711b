"""What a user does to a job once it exists: read it, cancel it, resume it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from embedq.storage.db import again_on_conflict, transaction
from embedq.storage.jobs import cancel_job, job_errors, job_view, unqueue_pending
from embedq.storage.models import Collection, Job, JobStatus
from embedq.tasks import lookup
from embedq.tasks.dispatch import Dispatcher
from embedq.tasks.errors import Conflict
from embedq.tasks.indexing import finish
from embedq.tasks.runtime import Runtime


def describe(rt: Runtime, job_id: str, *, with_errors: bool = False) -> dict[str, Any]:
    """The job as the API shows it; with ``errors``: every rejected record and failed batch."""
    with rt.sessions() as session:
        view = job_view(session, lookup.job(session, job_id))
        if with_errors:
            view["errors"] = job_errors(session, job_id)
    return view


def cancel(rt: Runtime, job_id: str) -> dict[str, Any]:
    """Cancel a queued or running job (its remaining batches are not run); Conflict when it
    has already finished. Returns the job as it is now."""

    def cancel_in(session: Session) -> None:
        job = lookup.job(session, job_id)
        if not cancel_job(session, job_id):
            raise Conflict(f"job {job_id} is already {job.status.value}")

    again_on_conflict(rt.sessions, cancel_in, write=True)
    return describe(rt, job_id)


def resume(rt: Runtime, dispatcher: Dispatcher, job_id: str | None = None) -> list[dict[str, Any]]:
    """Hand the pending batches of running index jobs on again, then finish what can finish.

    For after a broker lost its queue or workers were down: SQL knows every batch that is not
    done, and embedding a batch twice is harmless. Every pending batch counts as not handed
    on; the dispatcher hands on as many as the job's window takes (the rest follow as those
    finish). A job whose producer stopped before submitting everything (not sealed) cannot
    finish; it is reported, not touched.
    """
    with rt.sessions() as session:
        query = select(Job).where(Job.kind == "index", Job.status == JobStatus.running)
        if job_id:
            query = select(Job).where(Job.id == job_id)
        jobs = list(session.scalars(query))
        names = {
            j.id: session.get_one(Collection, j.collection_id).name
            for j in jobs
            if j.collection_id is not None
        }
    report = []
    for job in jobs:
        with transaction(rt.sessions, write=True) as session:
            unqueue_pending(session, job.id)
        requeued = dispatcher.feed(job.id)
        if requeued and job.id in names:
            dispatcher.catch_up(names[job.id])
        report.append(
            {
                "id": job.id,
                "requeued": requeued,
                "sealed": job.sealed,
                "finished": finish(rt, job.id),
            }
        )
    return report
