"""A throwaway distributed stack for benchmarks: a fresh PostgreSQL database, a Redis DB
number, one embed worker and the index writer, stopped and removed afterwards."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, cli_env

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def start_worker(
    queue: str, env: dict[str, str], module: str = "embedq.api.cli"
) -> subprocess.Popen[bytes]:
    """``embedq worker -Q QUEUE`` in the background, quiet (its logs are not the figure);
    ``module``: the entry point that runs the command line (a benchmark may wrap it)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, "worker", "-Q", queue, "--loglevel", "WARNING"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def distributed(
    data_dir: Path,
    redis_db: int = 14,
    embed_workers: int = 1,
    embed_module: str = "embedq.api.cli",
    **extra: str,
) -> Iterator[dict[str, str]]:
    import redis
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"embedq_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    broker = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(broker).flushdb()
    env = cli_env(
        data_dir,
        EMBEDQ_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        EMBEDQ_BROKER_URL=broker,
        **extra,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [sys.executable, "-m", "embedq.api.cli", "db", "upgrade"],
            env=env,
            check=True,
            capture_output=True,
        )
        procs.extend(start_worker("embed", env, embed_module) for _ in range(embed_workers))
        procs.append(start_worker("index", env))
        _wait_for_workers(broker, embed_workers + 1)
        yield env
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        redis.Redis.from_url(broker).flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_for_workers(broker: str, count: int, timeout: float = 120) -> None:
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0)) >= count:
            return
    raise RuntimeError(f"{count} workers did not come up within {timeout:.0f} s")
