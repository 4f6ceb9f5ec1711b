"""Fixtures shared by the storage and index-writer unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.index_store import IndexStore
from embedq.storage.schema import upgrade
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings
from tests.unit.test_storage import make_collection


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(tmp_path / "idx")


@pytest.fixture
def cid(sessions: sessionmaker[Session]) -> int:
    return make_collection(sessions)


@pytest.fixture
def rt(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on a migrated database of each kind, with its data folder in tmp_path."""
    runtime = Runtime(Settings(data_dir=tmp_path / "data", database_url=db_url))
    upgrade(runtime.sessions.kw["bind"])
    yield runtime
    runtime.sessions.kw["bind"].dispose()
