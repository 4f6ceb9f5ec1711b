"""The optional ``callback_url`` of job creation over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from embedq.tasks.callbacks import BadCallbackUrl, check_callback_url, register_callback
from embedq.tasks.runtime import Runtime

CallbackQuery = Annotated[
    str | None,
    Query(max_length=2048, description="POST the job's final JSON here once it finishes"),
]


def checked_callback_url(value: Any, loc: tuple[str, ...]) -> str | None:
    """The URL, checked (a 422 naming ``loc`` when it is unusable), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        problem = "callback_url must be a string"
    else:
        try:
            return check_callback_url(value)
        except BadCallbackUrl as exc:
            problem = str(exc)
    raise RequestValidationError(
        [{"type": "value_error", "loc": loc, "msg": problem, "input": value}]
    )


def take_callback_url(fields: dict[str, Any]) -> str | None:
    """Remove ``callback_url`` from a job request's fields and return it, checked."""
    return checked_callback_url(fields.pop("callback_url", None), ("body", "callback_url"))


def with_callback(rt: Runtime, job_id: str, callback_url: str | None) -> str:
    """Register the job's callback, if one was asked for; returns the job id."""
    if callback_url is not None:
        register_callback(rt, job_id, callback_url)
    return job_id
