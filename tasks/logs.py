"""Logging for every embedq process: plain text by default, or with ``EMBEDQ_LOG_FORMAT=json``
one JSON object per line. Either way a record carries the ``job_id``, ``batch_id`` and
``collection`` of the work in hand, set with ``log_context`` (a context variable, so threads
and tasks keep their own)."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("job_id", "batch_id", "collection")
_context: ContextVar[dict[str, Any]] = ContextVar("embedq_log_context", default={})  # noqa: B039
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "context"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (job_id, batch_id, collection...) to every record logged inside."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (and a text suffix for plain logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context.get()
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        record.context = "".join(f" {k}={v}" for k, v in fields.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def logging_config(fmt: str, level: int | str = logging.INFO) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for every embedq process (uvicorn applies it in each
    server process): one stderr handler in the chosen format on the root logger, which
    uvicorn's loggers propagate to."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"format": TEXT_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json" if fmt == "json" else "text",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(fmt: str, level: int | str = logging.INFO) -> None:
    """Replace the root logger's handlers with one stderr handler in the chosen format."""
    logging.config.dictConfig(logging_config(fmt, level))
