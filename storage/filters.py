"""Metadata filters: a small JSON syntax over ``documents.meta``, compiled to SQL.

    {"topic": "bees"}                         equality (a string, number, boolean or null)
    {"lang": {"in": ["en", "de"]}}            one of
    {"year": {"gte": 2010, "lt": 2020}}       ranges: gt, gte, lt, lte (numbers or strings)
    {"topic": {"ne": "bees"}}                 not equal (documents without the key match too)
    {"author.name": "Ada"}                    a dotted key reads a nested object

Keys combine by AND, as do the operators of one key. A comparison only matches values of the
same JSON type: ``{"year": {"gte": 2010}}`` skips a document whose year is the string "2015".
The same filter gives the same documents on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, and_, case, cast, false, func, not_, or_, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from embedq.storage.models import Document

OPERATORS = ("eq", "ne", "in", "gt", "gte", "lt", "lte")
RANGES = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
MAX_IN = 1000
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")
Scalar = str | int | float | bool | None


class FilterError(ValueError):
    """A filter that does not follow the syntax; the message names the key and the reason."""


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: str
    value: Any


def parse_filter(spec: object) -> list[Condition]:
    """Check a filter and flatten it into conditions (all must hold)."""
    if not isinstance(spec, dict):
        raise FilterError('a filter is a JSON object of meta keys, e.g. {"year": {"gte": 2010}}')
    out: list[Condition] = []
    for key, test in spec.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise FilterError(
                f"filter key {key!r}: use letters, digits, '_' or '-', with '.' for nesting"
            )
        if isinstance(test, dict):
            if not test:
                raise FilterError(f"filter key {key!r}: no operator given")
            for op, value in test.items():
                out.append(_condition(key, op, value))
        else:
            out.append(_condition(key, "eq", test))
    return out


def _condition(key: str, op: str, value: Any) -> Condition:
    if op not in OPERATORS:
        raise FilterError(
            f"filter key {key!r}: unknown operator {op!r}; use {', '.join(OPERATORS)}"
        )
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > MAX_IN:
            raise FilterError(f"filter key {key!r}: 'in' takes a list of 1 to {MAX_IN} values")
        for item in value:
            _scalar(key, op, item)
        return Condition(key, op, list(value))
    _scalar(key, op, value)
    if op in RANGES and (value is None or isinstance(value, bool)):
        raise FilterError(f"filter key {key!r}: {op!r} compares numbers or strings")
    return Condition(key, op, value)


def _scalar(key: str, op: str, value: Any) -> None:
    if not isinstance(value, Scalar):
        raise FilterError(
            f"filter key {key!r}: {op!r} takes a string, number, boolean or null, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, float) and value != value:
        raise FilterError(f"filter key {key!r}: NaN cannot be compared")


def compile_filter(conditions: list[Condition], dialect: str) -> ColumnElement[bool]:
    """The SQL condition on ``Document`` for ``conditions`` (from :func:`parse_filter`)."""
    build = _postgres if dialect == "postgresql" else _sqlite
    return and_(true(), *(build(c) for c in conditions))


# --- SQLite: json_type / json_extract with a path --------------------------------------------


def _sqlite_type(value: Scalar) -> tuple[str, ...]:
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("true",) if value else ("false",)
    if isinstance(value, int | float):
        return ("integer", "real")
    return ("text",)


def _sqlite(c: Condition) -> ColumnElement[bool]:
    path = "$" + "".join(f'."{part}"' for part in c.key.split("."))
    kind = func.json_type(Document.meta, path)
    value = func.json_extract(Document.meta, path)

    def equal(v: Scalar) -> ColumnElement[bool]:
        test = kind.in_(_sqlite_type(v))
        if v is None or isinstance(v, bool):
            return test
        return and_(test, value == v)

    if c.op == "eq":
        return equal(c.value)
    if c.op == "ne":
        return not_(func.coalesce(equal(c.value), false()))
    if c.op == "in":
        return or_(*(equal(v) for v in c.value))
    return and_(kind.in_(_sqlite_type(c.value)), getattr(value, RANGES[c.op])(c.value))


# --- PostgreSQL: jsonb containment for equality, typed extraction for ranges ------------------


def _nested(key: str, value: Scalar) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _pg_contains(key: str, value: Scalar) -> ColumnElement[bool]:
    return type_coerce(Document.meta, JSONB).contains(_nested(key, value))


def _postgres(c: Condition) -> ColumnElement[bool]:
    parts = c.key.split(".")
    if c.op == "eq":
        return _pg_contains(c.key, c.value)
    if c.op == "ne":
        return not_(func.coalesce(_pg_contains(c.key, c.value), false()))
    if c.op == "in":
        return or_(*(_pg_contains(c.key, v) for v in c.value))
    kind = func.jsonb_typeof(func.jsonb_extract_path(Document.meta, *parts))
    text = func.jsonb_extract_path_text(Document.meta, *parts)
    if isinstance(c.value, str):
        return and_(kind == "string", getattr(text, RANGES[c.op])(c.value))
    # CASE guards the cast: PostgreSQL may evaluate an AND's terms in any order.
    number = case((kind == "number", cast(text, Float)), else_=None)
    return getattr(number, RANGES[c.op])(c.value)
