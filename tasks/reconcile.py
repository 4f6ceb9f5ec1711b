"""The reconciler: find work that SQL says is unfinished and the broker or the workers lost,
and hand it on again.

SQL is the source of truth; a message in Redis is only a reminder. Reminders get lost: Redis
restarted without its data (every queued message gone), a worker killed while it ran a batch
(its message sits unacknowledged for the visibility timeout, 6 h), a catch-up request that
died with the index writer. Every effect is idempotent, so handing a batch on twice costs a
little time and nothing else; the reconciler errs on that side.

What it does, each run:

- **broker lost**: an epoch key in Redis is set once the reconciler has run against it; when
  it is missing, Redis lost its state, and every pending batch of every running job is queued
  again (after declaring the queues again: their bindings went with the rest);
- **worker lost**: a pending batch whose latest delivery began (``started_at`` not older than
  ``queued_at``) on a worker that is gone (no heartbeat) or that answers but is not running
  it, is queued again; the delivery it lost was counted, so a batch that kills its worker
  every time ends failed after ``EMBEDQ_MAX_ATTEMPTS`` deliveries;
- **stranded**: a pending batch queued a while ago (three reconciler periods, at least 30 s)
  that no worker began since, whose message is neither in the broker's embed queue nor held
  by a worker that answers, is queued again: its message went to a worker killed before it
  began the batch, and sits unacknowledged for the visibility timeout (the queue holds only
  each job's window, so reading it is cheap);
- **lease**: a pending batch queued more than ``EMBEDQ_BATCH_LEASE_S`` ago that no worker
  began since is queued again (when the queue could not be read);
- **feed**: a running job with fewer batches in the broker than its window and some never
  handed on gets them (``embedq.tasks.feeding``): the worker that would have fed it may have died
  between settling a batch and handing on the next;
- **finish**: a sealed running job with nothing pending is finished (the worker that settled
  its last batch may have died before finishing it);
- **index**: a collection with chunks above its published snapshot's watermark gets a
  catch-up request, also when an earlier request went stale;
- **stalled producers**: a running job that is not sealed and saw no activity for the lease
  is reported, not failed: SQL cannot tell a dead producer from a live one streaming a long
  run of unchanged documents, and a job failed under a live producer would stay failed.
  ``embedq jobs cancel`` ends it; submitting the corpus again skips what was done.

Candidates are read from SQL before the workers are asked what they run, and each requeue is
a conditional update on the stamps that were read, so a batch begun or settled meanwhile is
left alone. The pure decision is ``lost_batches``; ``reconcile`` does the reading and the
writing through a ``Broker`` (Celery and Redis in production, a fake in unit tests).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select

from embedq.storage.db import transaction
from embedq.storage.jobs import claim_requeue
from embedq.storage.models import BatchState, Collection, Job, JobBatch, JobStatus
from embedq.tasks.feeding import feed_all
from embedq.tasks.indexing import finish
from embedq.tasks.names import HEARTBEAT_KEY
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)

BOOT = secrets.token_hex(4)
"""Tells this worker process apart from an earlier one with the same hostname (a container
restarted in place keeps its hostname and often its pid)."""

BROKER_LOST = "broker lost"
WORKER_LOST = "worker lost"
STRANDED = "message stranded"
LEASE = "lease expired"
STRANDED_MIN_S = 30.0


# --- worker identity and liveness -----------------------------------------------------------


def worker_identity(hostname: str) -> str:
    """What a worker's heartbeat is keyed by: its hostname and this process's boot token."""
    return f"{hostname}#{BOOT}"


def worker_label(hostname: str) -> str:
    """What ``begin_attempt`` stores in ``JobBatch.worker``: identity and pid."""
    return f"{worker_identity(hostname)} pid {os.getpid()}"


def parse_worker(label: str | None) -> tuple[str, str]:
    """(hostname, identity) of a stored worker label; empty strings for none."""
    if not label:
        return "", ""
    identity = label.split(" ", 1)[0]
    return identity.rsplit("#", 1)[0], identity


def heartbeat_period(reconcile_every_s: float) -> float:
    return min(10.0, reconcile_every_s)


class Heartbeat:
    """A thread that keeps ``embedq:worker:<identity>`` alive in Redis for a worker process.

    A thread of its own, because a solo-pool worker's event loop (and its timer) is blocked
    while it runs a task (a CPU embed worker, the index writer), and a busy worker must not
    look dead. The key expires three periods
    after the process is killed.
    """

    def __init__(self, client: Any, identity: str, period: float) -> None:
        self.client = client
        self.key = HEARTBEAT_KEY.format(identity)
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedq-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.period + 1)
        try:
            self.client.delete(self.key)
        except Exception:  # the broker may be gone at shutdown
            log.debug("could not remove heartbeat %s", self.key, exc_info=True)

    def _run(self) -> None:
        ttl = max(1, round(3 * self.period))
        while not self._stop.is_set():
            try:
                self.client.set(self.key, "1", ex=ttl)
            except Exception as exc:
                log.warning("heartbeat not written: %s", exc)
            self._stop.wait(self.period)


# --- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingBatch:
    id: int
    job_id: str
    queued_at: datetime | None
    started_at: datetime | None
    worker: str | None


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the workers said: who is alive (heartbeats), who answered, and which batches the
    answering workers run or hold (active, reserved or scheduled for a retry); and which
    batches have a message waiting in the embed queue (None: the queue was not read)."""

    alive: frozenset[str] = frozenset()
    answered: frozenset[str] = frozenset()
    running: frozenset[int] = frozenset()
    queued: frozenset[int] | None = None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(now: datetime, then: datetime) -> float:
    return (_utc(now) - _utc(then)).total_seconds()


def began(batch: PendingBatch) -> bool:
    """True when the batch's latest delivery began: it was not queued again since."""
    if batch.started_at is None:
        return False
    return batch.queued_at is None or _utc(batch.started_at) >= _utc(batch.queued_at)


def lost_batches(
    batches: Iterable[PendingBatch],
    workers: WorkerView,
    *,
    now: datetime,
    lease_s: float,
    broker_lost: bool = False,
    stranded_s: float | None = None,
) -> dict[int, str]:
    """The pending batches to queue again, each with the reason. ``stranded_s``: how long a
    batch not begun may go unseen in the queue and the workers before it counts as lost."""
    out: dict[int, str] = {}
    for batch in batches:
        if broker_lost:
            out[batch.id] = BROKER_LOST
        elif began(batch):
            hostname, identity = parse_worker(batch.worker)
            gone = identity not in workers.alive or hostname in workers.answered
            if batch.id not in workers.running and gone:
                out[batch.id] = WORKER_LOST
        elif batch.queued_at is not None and _age(now, batch.queued_at) > lease_s:
            out[batch.id] = LEASE
        elif batch.queued_at is not None and _stranded(batch, workers, now, stranded_s):
            out[batch.id] = STRANDED
    return out


def _stranded(
    batch: PendingBatch, workers: WorkerView, now: datetime, after_s: float | None
) -> bool:
    if after_s is None or workers.queued is None or batch.queued_at is None:
        return False
    unseen = batch.id not in workers.queued and batch.id not in workers.running
    return unseen and _age(now, batch.queued_at) > after_s


# --- the broker side ------------------------------------------------------------------------


class Broker(Protocol):
    def epoch_present(self) -> bool: ...

    def mark_epoch(self) -> None: ...

    def redeclare(self) -> None: ...

    def workers(self) -> WorkerView: ...

    def send_embed(self, batch_id: int) -> None: ...

    def catch_up(self, collection: str) -> None: ...


@dataclass
class Report:
    broker_lost: bool = False
    requeued: dict[str, list[int]] = field(default_factory=dict)
    fed: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    catch_up: list[str] = field(default_factory=list)
    stalled: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def requeued_count(self) -> int:
        return sum(len(ids) for ids in self.requeued.values())


def _now(rt: Runtime) -> datetime:
    with rt.sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            value = session.scalar(select(func.now()))
            if isinstance(value, datetime):
                return _utc(value)
    return datetime.now(UTC)


def pending_batches(rt: Runtime) -> list[PendingBatch]:
    """Pending batches of running index jobs that were handed to the broker (the others
    wait in SQL for their turn in the job's window)."""
    with rt.sessions() as session:
        rows = session.execute(
            select(
                JobBatch.id,
                JobBatch.job_id,
                JobBatch.queued_at,
                JobBatch.started_at,
                JobBatch.worker,
            )
            .join(Job, Job.id == JobBatch.job_id)
            .where(
                JobBatch.state == BatchState.pending,
                JobBatch.queued_at.is_not(None),
                Job.status == JobStatus.running,
            )
            .order_by(JobBatch.id)
        ).all()
    return [PendingBatch(r.id, r.job_id, r.queued_at, r.started_at, r.worker) for r in rows]


def requeue(
    rt: Runtime, broker: Broker, batches: Sequence[PendingBatch], lost: dict[int, str]
) -> dict[str, list[int]]:
    """Claim each lost batch (a conditional stamp) and send the claimed ones."""
    out: dict[str, list[int]] = {}
    for batch in batches:
        reason = lost.get(batch.id)
        if reason is None:
            continue
        with transaction(rt.sessions, write=True) as session:
            claimed = claim_requeue(
                session, batch.id, queued_at=batch.queued_at, started_at=batch.started_at
            )
        if claimed:
            broker.send_embed(batch.id)
            out.setdefault(reason, []).append(batch.id)
    return out


def finish_settled(rt: Runtime) -> list[str]:
    """Finish the sealed running index jobs that have nothing pending."""
    pending = select(JobBatch.id).where(
        JobBatch.job_id == Job.id, JobBatch.state == BatchState.pending
    )
    with rt.sessions() as session:
        ids = session.scalars(
            select(Job.id).where(
                Job.kind == "index",
                Job.status == JobStatus.running,
                Job.sealed.is_(True),
                ~pending.exists(),
            )
        ).all()
    return [job_id for job_id in ids if finish(rt, job_id)]


def collections_behind(rt: Runtime) -> list[str]:
    """Collections with chunk sequence numbers above their published watermark."""
    with rt.sessions() as session:
        rows = session.execute(select(Collection.name, Collection.seq)).all()
    out = []
    for name, seq in rows:
        meta = rt.store.meta(name)
        if seq > (meta.watermark if meta else 0):
            out.append(name)
    return out


def stalled_jobs(rt: Runtime, now: datetime, lease_s: float) -> list[dict[str, Any]]:
    """Running index jobs, not sealed, with no batch queued or begun for ``lease_s``."""
    with rt.sessions() as session:
        rows = session.execute(
            select(
                Job.id,
                Job.started_at,
                func.max(JobBatch.queued_at),
                func.max(JobBatch.started_at),
            )
            .outerjoin(JobBatch, JobBatch.job_id == Job.id)
            .where(Job.kind == "index", Job.status == JobStatus.running, Job.sealed.is_(False))
            .group_by(Job.id, Job.started_at)
        ).all()
    out = []
    for job_id, *stamps in rows:
        latest = max((_utc(s) for s in stamps if s is not None), default=None)
        idle = (_utc(now) - latest).total_seconds() if latest else None
        if idle is None or idle > lease_s:
            out.append({"id": job_id, "idle_s": round(idle) if idle is not None else None})
    return out


def reconcile(rt: Runtime, broker: Broker) -> Report:
    """One pass of the reconciler; see the module's docstring."""
    report = Report(broker_lost=not broker.epoch_present())
    if report.broker_lost:
        broker.redeclare()
    batches = pending_batches(rt)  # read before asking the workers
    workers = WorkerView() if report.broker_lost else broker.workers()
    now = _now(rt)
    lease = rt.settings.batch_lease_s
    lost = lost_batches(
        batches,
        workers,
        now=now,
        lease_s=lease,
        broker_lost=report.broker_lost,
        stranded_s=max(STRANDED_MIN_S, 3 * rt.settings.reconcile_every_s),
    )
    report.requeued = requeue(rt, broker, batches, lost)
    if report.broker_lost:
        broker.mark_epoch()
    report.fed = feed_all(rt, broker.send_embed)
    report.finished = finish_settled(rt)
    for name in collections_behind(rt):
        broker.catch_up(name)
        report.catch_up.append(name)
    report.stalled = stalled_jobs(rt, now, lease)
    if report.broker_lost or report.requeued or report.fed or report.finished or report.stalled:
        log.warning("reconciled: %s", report.as_dict())
    return report
