"""Checks a command makes before it reads: that there is a database to read (a read-only
command never creates one), and, for a collection that is not there, a message that says
where embedq looked and what it found, since the usual cause is the wrong folder."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from embedq.storage.models import Collection
from embedq.tasks.runtime import Runtime


def sqlite_file(rt: Runtime) -> Path | None:
    """The SQLite file the settings point at, or None for a server database."""
    url = make_url(rt.settings.db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _where(rt: Runtime) -> str:
    return f"data folder {rt.settings.data_dir}"


def missing_database(rt: Runtime) -> str | None:
    """Why a read-only command cannot run here (no SQLite file yet), or None."""
    path = sqlite_file(rt)
    if path is None or path.exists():
        return None
    return (
        f"no embedq database in the {_where(rt)} ({path} does not exist); "
        "run from the folder that holds embedq-data, set EMBEDQ_DATA_DIR, "
        "or index something first (embedq index FILE --collection NAME)"
    )


def collection_names(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(Collection.name).order_by(Collection.name)))


def unknown_collection(rt: Runtime, name: str) -> str | None:
    """A message naming the data folder and the collections that exist when ``name`` is not
    one of them; None when it is."""
    names = collection_names(rt)
    if name in names:
        return None
    there = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    found = f"collections there: {there}" if names else "it holds no collections yet"
    where = _where(rt) if sqlite_file(rt) is not None else f"database {_safe_url(rt)}"
    return f"no collection named {name!r} in the {where} ({found})"


def _safe_url(rt: Runtime) -> str:
    return make_url(rt.settings.db_url).render_as_string(hide_password=True)
