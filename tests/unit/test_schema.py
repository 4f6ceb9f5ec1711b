"""The schema check every command runs: the recorded head revision and the version table."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from embedq.storage import schema
from tests.unit.imports import loaded_after


def test_the_recorded_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(schema.MIGRATIONS)).get_current_head() == schema.HEAD


def test_a_database_is_current_only_at_the_head(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert not schema.is_current(engine)  # no version table yet
        schema.ensure_ready(engine)  # SQLite is upgraded in place
        assert schema.is_current(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        assert not schema.is_current(engine)
    finally:
        engine.dispose()


def test_checking_the_schema_does_not_import_alembic() -> None:
    code = (
        "from sqlalchemy import create_engine; from embedq.storage import schema; "
        "schema.is_current(create_engine('sqlite://'))"
    )
    assert loaded_after(code, ["alembic"]) == []
