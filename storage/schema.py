"""Apply the Alembic migrations to a database."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0005"
"""The newest migration's revision (a test holds it to the migrations folder): every command
checks it, and Alembic, a twentieth of a second to import, is loaded only to upgrade."""


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class SchemaNotReady(RuntimeError):
    """The database cannot be used by this version of embedq."""


def ensure_ready(engine: Engine) -> None:
    """SQLite (the embedded default) is upgraded in place; other databases must be current
    already (``embedq db upgrade`` runs the migrations there)."""
    from sqlalchemy.exc import OperationalError

    try:
        if engine.dialect.name == "sqlite":
            with _upgrade_lock(engine):
                if not is_current(engine):
                    upgrade(engine)
        elif not is_current(engine):
            raise SchemaNotReady("the database schema is not up to date: run 'embedq db upgrade'")
    except OperationalError as exc:
        raise SchemaNotReady(f"cannot reach the database: {exc.orig}") from exc


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision (Alembic's version table reads
    ``HEAD``; a database without the table is at none)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return list(versions) == [HEAD]


@contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    """One upgrade at a time per SQLite file: processes that start together (two ``embedq
    index`` runs on a fresh data folder) would otherwise both create the tables, and one would
    fail with "database is locked" or "table already exists". The lock is a file beside the
    database, held with ``flock`` (released by the kernel if the process dies)."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).with_name(Path(database).name + ".upgrade-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
