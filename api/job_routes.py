"""Routes for jobs: submit one of a registered kind, poll it, read its errors and result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError

from embedq.api.analysis_jobs import ANALYSIS_BODIES, start_analysis
from embedq.api.bodies import CheckedRoute
from embedq.api.callback_params import take_callback_url, with_callback
from embedq.api.deps import DispatcherDep, JobIdParam, RuntimeDep
from embedq.api.routes import NOT_FOUND, accepted
from embedq.api.schemas import (
    IndexJobRequest,
    JobAccepted,
    JobErrors,
    JobRequest,
    JobResult,
    JobView,
    Problem,
)
from embedq.storage.jobs import job_errors, job_view
from embedq.tasks import job_control, lookup, uploads
from embedq.tasks.dispatch import Dispatcher
from embedq.tasks.errors import BadInput, Conflict, NotFound
from embedq.tasks.runtime import Runtime

router = APIRouter(tags=["jobs"], route_class=CheckedRoute)


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job that ``POST /v1/jobs`` accepts: its body and what starts it."""

    body: type[BaseModel]
    start: Callable[[Runtime, Dispatcher, Any], str]


def _start_index(rt: Runtime, dispatcher: Dispatcher, body: IndexJobRequest) -> str:
    return uploads.submit_records(rt, dispatcher, body.collection, body.documents)


JOB_KINDS: dict[str, JobKind] = {
    "index": JobKind(IndexJobRequest, _start_index),
    **{name: JobKind(body, start_analysis) for name, body in ANALYSIS_BODIES.items()},
}
"""Job kinds by name; a new kind registers its request model and starter here."""


def _in_body(errors: Sequence[Any]) -> list[Any]:
    return [{**err, "loc": ("body", *err.get("loc", ()))} for err in errors]


@router.post(
    "/v1/jobs",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 413: {"model": Problem}},
)
def create_job(
    body: JobRequest, rt: RuntimeDep, dispatcher: DispatcherDep, response: Response
) -> JobAccepted:
    """Start a job. ``index``: {"kind": "index", "collection", "documents": [...]}.

    Any kind takes an optional ``callback_url``: the job's final JSON is POSTed there once
    it finishes."""
    kind = JOB_KINDS.get(body.kind)
    if kind is None:
        raise BadInput(f"unknown job kind {body.kind!r}; supported: {', '.join(sorted(JOB_KINDS))}")
    fields = body.model_dump()
    callback_url = take_callback_url(fields)
    try:
        request = kind.body.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(_in_body(exc.errors(include_url=False))) from exc
    return accepted(response, with_callback(rt, kind.start(rt, dispatcher, request), callback_url))


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND)
def get_job(job_id: JobIdParam, rt: RuntimeDep) -> JobView:
    """Status and progress; a job that rejected some records still succeeds."""
    return JobView.model_validate(job_control.describe(rt, job_id))


@router.get("/v1/jobs/{job_id}/errors", response_model=JobErrors, responses=NOT_FOUND)
def get_job_errors(
    job_id: JobIdParam,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobErrors:
    """Rejected records (line or position, id, reason) and failed batches, oldest first."""
    with rt.sessions() as session:
        total = job_view(session, lookup.job(session, job_id))["rejected"]
        errors = job_errors(session, job_id, limit=limit, offset=offset)
    return JobErrors.model_validate({"errors": errors, "total": total})


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobView,
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "already finished"}},
)
def cancel(job_id: JobIdParam, rt: RuntimeDep) -> JobView:
    """Cancel a queued or running job: its remaining batches are not run."""
    return JobView.model_validate(job_control.cancel(rt, job_id))


@router.get(
    "/v1/jobs/{job_id}/result",
    response_model=JobResult,
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "not finished yet"}},
)
def get_job_result(job_id: JobIdParam, rt: RuntimeDep) -> JobResult:
    """The job's result once it has finished."""
    with rt.sessions() as session:
        job = lookup.job(session, job_id)
    if not job.status.finished:
        raise Conflict(f"job {job_id} is {job.status.value}; its result is not ready yet")
    return JobResult(status=job.status.value, result=job.result, error=job.error)


@router.get(
    "/v1/jobs/{job_id}/files/{name}",
    response_class=FileResponse,
    responses={**NOT_FOUND},
)
def get_job_file(job_id: JobIdParam, name: str, rt: RuntimeDep) -> FileResponse:
    """A file the job's result lists (vectors.npy, vectors.json, clusters.png, vecs.tsv...)."""
    with rt.sessions() as session:
        job = lookup.job(session, job_id)
    files = (job.result or {}).get("files") or []
    path = rt.settings.data_dir / "results" / job_id / name
    if name not in files or not path.is_file():
        raise NotFound(f"job {job_id} has no file {name!r}")
    return FileResponse(path, filename=name)
