"""Fixtures shared by the storage and index-writer unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.index_store import IndexStore
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
