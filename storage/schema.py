"""Apply the Alembic migrations to a database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``)."""
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
            upgrade(engine)
        elif not is_current(engine):
            raise SchemaNotReady("the database schema is not up to date: run 'embedq db upgrade'")
    except OperationalError as exc:
        raise SchemaNotReady(f"cannot reach the database: {exc.orig}") from exc


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head
