"""Engines and sessions for SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
"""PostgreSQL's serialization failure and deadlock detected: the transaction was rolled back
as a whole and may be run again."""
CONFLICT_TRIES = 3


def json_text(value: Any) -> str:
    # Sorted keys make equal objects equal as text, which SQLite compares.
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and explicit transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, json_serializer=json_text)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, json_serializer=json_text, connect_args={"timeout": 60, "check_same_thread": False}
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's implicit transactions start late and ignore SELECTs; take control so that a
    # transaction covers its reads. Write transactions begin with a write (see tasks), so they
    # queue on the busy timeout instead of failing on a read-to-write upgrade.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool = False) -> Iterator[Session]:
    """A session in one transaction, committed on success and rolled back on error.

    ``write=True`` takes SQLite's write lock at BEGIN, so a transaction that reads before it
    writes waits its turn rather than failing with "database is locked".
    """
    with factory() as session:
        if write:
            session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def again_on_conflict(
    factory: sessionmaker[Session], work: Callable[[Session], T], *, write: bool = False
) -> T:
    """``work`` in one ``transaction``, run again (``CONFLICT_TRIES`` in all) when PostgreSQL
    aborts it as a deadlock or a serialization failure: rows locked by writers in an order
    nobody controls (a producer re-storing documents that a worker is marking indexed). The
    transaction was rolled back, so running ``work`` again is safe."""
    for attempt in range(1, CONFLICT_TRIES + 1):
        try:
            with transaction(factory, write=write) as session:
                return work(session)
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state not in CONFLICT_SQLSTATES or attempt == CONFLICT_TRIES:
                raise
            log.warning("transaction aborted by the database (%s); running it again", state)
    raise AssertionError("unreachable")


def describe_error(exc: BaseException) -> str:
    """A one-line account of a failure for a job's ``error``: a database error gives the
    driver's first line, never the SQL statement and its parameters (which can carry a whole
    document)."""
    if isinstance(exc, StatementError):
        first = str(exc.orig).strip().splitlines() if exc.orig is not None else []
        return f"database error: {first[0] if first else type(exc).__name__}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]
