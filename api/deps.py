"""FastAPI dependencies: the process runtime and the in-process job runner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from api.background import JobRunner
from api.schemas import NAME_PATTERN
from tasks.runtime import Runtime, get_runtime


async def runtime() -> Runtime:
    """The process's runtime (database, index store, models); override it in tests.

    ``async`` because it never blocks (the runtime is made once, without I/O): a plain
    function would cost every request a trip through the thread pool."""
    return get_runtime()


def job_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.runner
    return runner


RuntimeDep = Annotated[Runtime, Depends(runtime)]
RunnerDep = Annotated[JobRunner, Depends(job_runner)]
NameParam = Annotated[
    str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN, description="collection")
]
JobIdParam = Annotated[str, Path(min_length=1, max_length=64, description="job id")]
