"""The reconciler's decisions, on SQLite with a fake broker: what counts as lost, what is
queued again, what is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from embedq.storage.jobs import add_batch, create_job, mark_running, seal, settle_batch
from embedq.storage.models import Collection, Job, JobBatch, JobStatus
from embedq.storage.schema import upgrade
from embedq.tasks.indexing import begin_attempt
from embedq.tasks.reconcile import (
    BROKER_LOST,
    LEASE,
    STRANDED,
    WORKER_LOST,
    PendingBatch,
    WorkerView,
    lost_batches,
    parse_worker,
    reconcile,
    worker_identity,
    worker_label,
)
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOST = "embed-1@node"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def batch(
    id: int, queued: float | None, started: float | None, worker: str | None = None
) -> PendingBatch:
    return PendingBatch(
        id,
        "job",
        ago(queued) if queued is not None else None,
        ago(started) if started is not None else None,
        worker,
    )


def test_worker_labels_carry_hostname_and_boot() -> None:
    label = worker_label(HOST)
    assert parse_worker(label) == (HOST, worker_identity(HOST))
    assert parse_worker(None) == ("", "")


def test_a_begun_batch_is_lost_only_when_its_worker_is_gone_or_idle() -> None:
    me = worker_label(HOST)
    alive = frozenset({worker_identity(HOST)})
    rows = [batch(1, 60, 50, me)]
    # Busy (alive, did not answer): a solo worker running a batch answers no inspect call.
    assert lost_batches(rows, WorkerView(alive=alive), now=NOW, lease_s=3600) == {}
    # Answered and runs it (active, reserved or scheduled for a retry).
    view = WorkerView(alive=alive, answered=frozenset({HOST}), running=frozenset({1}))
    assert lost_batches(rows, view, now=NOW, lease_s=3600) == {}
    # Answered without it: the delivery is gone though the worker lives.
    view = WorkerView(alive=alive, answered=frozenset({HOST}))
    assert lost_batches(rows, view, now=NOW, lease_s=3600) == {1: WORKER_LOST}
    # No heartbeat: killed. A restarted process with the same hostname has another boot.
    other_boot = frozenset({f"{HOST}#00000000"})
    assert lost_batches(rows, WorkerView(alive=other_boot), now=NOW, lease_s=3600) == {
        1: WORKER_LOST
    }


def test_a_batch_not_begun_whose_message_is_nowhere_is_stranded() -> None:
    """Queued 60 s ago, never begun, its message neither in the queue nor held by a worker
    that answered: the worker that took it was killed before it began. Seen in the queue or
    held by a worker, or queued too recently, or with the queue unread: left alone."""
    rows = [batch(1, 60, None), batch(2, 60, None), batch(3, 60, None), batch(4, 10, None)]
    view = WorkerView(running=frozenset({3}), queued=frozenset({2}))
    assert lost_batches(rows, view, now=NOW, lease_s=3600, stranded_s=30) == {1: STRANDED}
    assert lost_batches(rows, WorkerView(), now=NOW, lease_s=3600, stranded_s=30) == {}
    assert lost_batches(rows, view, now=NOW, lease_s=3600) == {}


def test_a_batch_queued_again_waits_for_its_lease_not_for_its_old_worker() -> None:
    # Begun at -50 s by a worker since killed, queued again at -40 s: not lost again (that
    # would queue it once per pass) until the lease runs out or a worker begins it.
    rows = [batch(1, 40, 50, worker_label(HOST)), batch(2, 4000, None), batch(3, 10, None)]
    assert lost_batches(rows, WorkerView(), now=NOW, lease_s=3600) == {2: LEASE}
    assert lost_batches(rows, WorkerView(), now=NOW, lease_s=30) == {1: LEASE, 2: LEASE}


def test_never_sent_batches_are_left_to_their_producer() -> None:
    assert lost_batches([batch(1, None, None)], WorkerView(), now=NOW, lease_s=1) == {}


def test_a_lost_broker_requeues_every_pending_batch() -> None:
    rows = [batch(1, 10, None), batch(2, 20, 10, worker_label(HOST)), batch(3, None, None)]
    lost = lost_batches(rows, WorkerView(), now=NOW, lease_s=3600, broker_lost=True)
    assert lost == {1: BROKER_LOST, 2: BROKER_LOST, 3: BROKER_LOST}


# --- one pass against SQLite ------------------------------------------------------------------


class FakeBroker:
    def __init__(self, *, epoch: bool = True, workers: WorkerView | None = None) -> None:
        self.epoch = epoch
        self.view = workers or WorkerView()
        self.sent: list[int] = []
        self.catch_ups: list[str] = []
        self.redeclared = 0

    def epoch_present(self) -> bool:
        return self.epoch

    def mark_epoch(self) -> None:
        self.epoch = True

    def redeclare(self) -> None:
        self.redeclared += 1

    def workers(self) -> WorkerView:
        return self.view

    def send_embed(self, batch_id: int) -> None:
        self.sent.append(batch_id)

    def catch_up(self, collection: str) -> None:
        self.catch_ups.append(collection)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=tmp_path / "data", batch_lease_s=600))
    upgrade(runtime.sessions.kw["bind"])
    return runtime


def new_job(rt: Runtime, batches: int, *, sealed: bool = True, seq: int = 0) -> tuple[str, list]:
    with rt.sessions.begin() as session:
        coll = Collection(
            name=f"c{datetime.now().timestamp():.6f}".replace(".", ""),
            model="m",
            dim=4,
            chunk_tokens=16,
            overlap=0,
            seq=seq,
        )
        session.add(coll)
        session.flush()
        job_id = create_job(session, "index", collection_id=coll.id, params={})
        mark_running(session, job_id)
        ids = [add_batch(session, job_id, [i]) for i in range(batches)]
        recently = datetime.now(UTC) - timedelta(seconds=5)
        session.execute(update(JobBatch).where(JobBatch.id.in_(ids)).values(queued_at=recently))
        session.execute(update(Job).where(Job.id == job_id).values(total=batches))
        if sealed:
            seal(session, job_id)
    return job_id, ids


def test_a_killed_workers_batch_is_queued_again_once(rt: Runtime) -> None:
    _job, (first, second) = new_job(rt, 2)
    assert begin_attempt(rt, first, worker_label(HOST)) is not None
    broker = FakeBroker()  # no heartbeat: the worker that began it is gone
    report = reconcile(rt, broker)
    assert report.requeued == {WORKER_LOST: [first]} and broker.sent == [first]
    # Queued again now: the next pass leaves it to its new delivery (and the lease).
    assert reconcile(rt, broker).requeued == {} and broker.sent == [first]
    # The next delivery is counted like any other: the cap applies to requeues too.
    attempt = begin_attempt(rt, first, worker_label(HOST))
    assert attempt is not None and attempt.attempts == 2
    with rt.sessions() as session:
        assert session.get_one(JobBatch, second).started_at is None


def test_a_batch_begun_or_settled_after_the_read_is_not_queued_again(rt: Runtime) -> None:
    _job, (first,) = new_job(rt, 1)
    begin_attempt(rt, first, worker_label(HOST))

    class Racing(FakeBroker):
        def workers(self) -> WorkerView:
            # While the workers are asked, another delivery begins the batch.
            begin_attempt(rt, first, "embed-2@node#abcd pid 1")
            return super().workers()

    broker = Racing()
    assert reconcile(rt, broker).requeued == {} and broker.sent == []


def test_lost_broker_requeues_everything_pending_and_redeclares(rt: Runtime) -> None:
    _job_id, ids = new_job(rt, 3)
    with rt.sessions.begin() as session:
        settle_batch(session, ids[0])
    broker = FakeBroker(epoch=False)
    report = reconcile(rt, broker)
    assert report.broker_lost and broker.redeclared == 1 and broker.epoch
    assert report.requeued == {BROKER_LOST: ids[1:]} and broker.sent == ids[1:]
    # The epoch is back: a second pass finds nothing lost.
    assert not reconcile(rt, broker).broker_lost and broker.sent == ids[1:]


def test_settled_jobs_are_finished_and_lagging_indexes_caught_up(rt: Runtime) -> None:
    job_id, ids = new_job(rt, 2, seq=7)
    with rt.sessions.begin() as session:
        for batch_id in ids:
            settle_batch(session, batch_id)
    broker = FakeBroker()
    report = reconcile(rt, broker)
    assert report.finished == [job_id]
    with rt.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.succeeded
        name = session.get_one(Collection, session.get_one(Job, job_id).collection_id).name
    assert name in broker.catch_ups and report.catch_up == broker.catch_ups


def test_an_unsealed_idle_job_is_reported_not_failed(rt: Runtime) -> None:
    job_id, ids = new_job(rt, 1, sealed=False)
    with rt.sessions.begin() as session:
        settle_batch(session, ids[0])
        old = datetime.now(UTC) - timedelta(seconds=10_000)
        session.execute(update(JobBatch).where(JobBatch.id == ids[0]).values(queued_at=old))
        session.execute(update(Job).where(Job.id == job_id).values(started_at=old))
    report = reconcile(rt, FakeBroker())
    assert [j["id"] for j in report.stalled] == [job_id]
    assert report.stalled[0]["idle_s"] > 600
    with rt.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.running
