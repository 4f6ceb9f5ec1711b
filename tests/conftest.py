"""Shared fixtures: a fresh database per test (SQLite and PostgreSQL) and the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.db import make_engine, make_sessionmaker
from embedq.storage.schema import upgrade
from tests.services import fresh_pg_database

# Tests never download weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each supported kind, removed after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'embedq.db'}"
        return
    with fresh_pg_database("embedq_t") as url:
        yield url


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a database migrated to the newest schema."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def shared_data() -> Path:
    """The shared test data folder beside the repository (absent in a fresh clone)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is absent")
    return path
