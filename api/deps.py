"""FastAPI dependencies: the process runtime and its dispatcher (embedded jobs run on the
app's background runner)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from embedq.api.background import JobRunner
from embedq.api.schemas import NAME_PATTERN
from embedq.tasks.dispatch import Dispatcher, dispatcher_for
from embedq.tasks.runtime import Runtime, get_runtime


async def runtime() -> Runtime:
    """The process's runtime (database, index store, models); override it in tests.

    ``async`` because it never blocks (the runtime is made once, without I/O): a plain
    function would cost every request a trip through the thread pool."""
    return get_runtime()


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def dispatcher(request: Request, rt: RuntimeDep) -> Dispatcher:
    """Where the request's work goes: the broker, or the app's background runner."""
    runner: JobRunner = request.app.state.runner
    return dispatcher_for(rt, runner)


DispatcherDep = Annotated[Dispatcher, Depends(dispatcher)]
NameParam = Annotated[
    str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN, description="collection")
]
JobIdParam = Annotated[str, Path(min_length=1, max_length=64, description="job id")]
