"""Metadata filters: syntax checks, and the same documents on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from embedq.storage.db import transaction
from embedq.storage.documents import NewDocument, upsert_documents
from embedq.storage.filters import FilterError, compile_filter, parse_filter
from embedq.storage.models import Document
from tests.unit.test_storage import make_collection

DOCS = {
    "a": {"year": 2009, "topic": "bees", "lang": "en", "open": True},
    "b": {"year": 2010, "topic": "bees", "lang": "de", "open": False},
    "c": {"year": 2015.5, "topic": "ants", "lang": "fr", "author": {"name": "Ada"}},
    "d": {"year": "2015", "topic": "ants"},  # a string year: numeric ranges skip it
    "e": None,
    "f": {"topic": None, "tags": ["x", "y"]},
}

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"topic": "bees"}, {"a", "b"}),
    ({"year": 2010}, {"b"}),
    ({"year": {"gte": 2010}}, {"b", "c"}),
    ({"year": {"gt": 2009, "lt": 2015.5}}, {"b"}),
    ({"year": {"lte": "2020"}}, {"d"}),
    ({"lang": {"in": ["en", "fr"]}}, {"a", "c"}),
    ({"topic": "bees", "lang": "de"}, {"b"}),
    ({"topic": {"ne": "bees"}}, {"c", "d", "e", "f"}),
    ({"open": True}, {"a"}),
    ({"open": False}, {"b"}),
    ({"topic": None}, {"f"}),
    ({"author.name": "Ada"}, {"c"}),
    ({"missing": "x"}, set()),
]


@pytest.fixture
def docs(sessions: sessionmaker[Session]) -> int:
    cid = make_collection(sessions)
    with transaction(sessions, write=True) as s:
        upsert_documents(s, cid, [NewDocument(k, f"text {k}", None, m) for k, m in DOCS.items()])
    return cid


@pytest.mark.parametrize(("spec", "expected"), CASES)
def test_filter_selects_the_same_documents_on_each_backend(
    sessions: sessionmaker[Session], docs: int, spec: dict[str, Any], expected: set[str]
) -> None:
    with transaction(sessions) as s:
        where = compile_filter(parse_filter(spec), s.get_bind().dialect.name)
        found = set(
            s.scalars(select(Document.external_id).where(Document.collection_id == docs, where))
        )
    assert found == expected


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ([1], "JSON object"),
        ({"a b": 1}, "'a b'"),
        ({"year": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"year": {}}, "no operator"),
        ({"lang": {"in": []}}, "'in' takes a list"),
        ({"lang": {"in": "en"}}, "'in' takes a list"),
        ({"year": {"gte": None}}, "compares numbers or strings"),
        ({"year": {"gte": True}}, "compares numbers or strings"),
        ({"tags": ["x"]}, "not list"),
        ({"author": {"eq": {"name": "Ada"}}}, "not dict"),
    ],
)
def test_bad_filters_name_the_key_and_the_reason(spec: object, reason: str) -> None:
    with pytest.raises(FilterError, match=reason):
        parse_filter(spec)
