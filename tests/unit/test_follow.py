"""Following a job: reads come quickly at first, then at the caller's interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from embedq.storage.models import JobStatus
from embedq.tasks import producer


@dataclass
class _Row:
    status: JobStatus


def test_follow_polls_at_growing_intervals_up_to_its_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statuses = [JobStatus.running] * 9 + [JobStatus.succeeded]
    reads: list[int] = []
    slept: list[float] = []

    def show(_rt: Any, _job_id: str, _bar: Any) -> _Row:
        reads.append(1)
        return _Row(statuses[len(reads) - 1])

    monkeypatch.setattr(producer, "_show", show)
    monkeypatch.setattr(producer.time, "sleep", slept.append)
    row = producer.follow(None, "j" * 32, progress=False, interval=0.25)  # type: ignore[arg-type]
    assert row.status is JobStatus.succeeded
    assert len(reads) == 10 and len(slept) == 9
    assert slept[0] == pytest.approx(producer.FIRST_POLL_S)
    # Each wait half as long again as the one before, until the ceiling holds.
    assert slept[:5] == pytest.approx([0.02 * 1.5**n for n in range(5)])
    assert slept[-1] == 0.25 and max(slept) == 0.25


def test_a_job_finished_at_the_first_read_is_not_waited_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(producer, "_show", lambda *_: _Row(JobStatus.failed))
    monkeypatch.setattr(producer.time, "sleep", slept.append)
    assert producer.follow(None, "j", progress=False).status is JobStatus.failed  # type: ignore[arg-type]
    assert slept == []
