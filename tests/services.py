"""Real services for integration tests: a fresh PostgreSQL database, a Redis DB number,
free ports, and processes started the way an operator would start them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"


@contextmanager
def fresh_pg_database(prefix: str = "embedq_it") -> Iterator[str]:
    """A new PostgreSQL database for this run, dropped afterwards; skips if unreachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    # No pool: a test may restart PostgreSQL, which would leave a pooled connection stale.
    admin = create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
        poolclass=NullPool,
    )
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc.orig}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_db() -> Iterator[str]:
    """A Redis database number of our own (leased in DB 0, so that concurrent test runs on one
    server never share a number), flushed before and after; skips if unreachable."""
    import redis

    admin = redis.Redis.from_url(f"{REDIS_URL}/0", socket_connect_timeout=3)
    lease = None
    try:
        for number in range(1, 16):
            key = f"embedq-test:lease:{number}"
            if admin.set(key, os.getpid(), nx=True, ex=4 * 3600):
                lease = (number, key)
                break
    except redis.ConnectionError as exc:
        admin.close()
        pytest.skip(f"Redis is not reachable at 127.0.0.1:6379: {exc}")
    if lease is None:
        admin.close()
        pytest.fail("every Redis database number 1-15 is leased by another test run")
    number, key = lease
    url = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()
        admin.delete(key)
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._fh.close()


def embedq_process(args: list[str], env: dict[str, str], log: Path) -> Process:
    return Process([sys.executable, "-m", "embedq.api.cli", *args], env, log)


def wait_until(check: object, timeout: float, what: str, interval: float = 0.25) -> object:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()  # type: ignore[operator]
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_http(url: str, timeout: float = 90, auth: tuple[str, str] | None = None) -> None:
    wait_until(lambda: httpx.get(url, timeout=2, auth=auth).status_code == 200, timeout, url)
