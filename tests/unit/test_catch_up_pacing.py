"""The index writer catches a collection up at most once a gap; sooner requests wait."""

from __future__ import annotations

from typing import Any

import pytest

from embedq.tasks import broker


def test_a_catch_up_waits_out_the_gap_after_the_last_one_of_its_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(broker, "_caught_up", {})
    monkeypatch.setattr(broker.time, "monotonic", lambda: clock[0])
    assert broker.catch_up_delay("a") == 0.0  # never caught up in this process
    broker.caught_up("a")
    clock[0] += 0.25
    assert broker.catch_up_delay("a") == pytest.approx(broker.CATCH_UP_GAP_S - 0.25)
    assert broker.catch_up_delay("b") == 0.0  # other collections do not wait
    clock[0] += broker.CATCH_UP_GAP_S
    assert broker.catch_up_delay("a") == 0.0


def test_a_deferred_catch_up_goes_back_to_the_index_queue_with_a_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(broker.app, "send_task", lambda name, **kw: sent.append((name, kw)))
    broker.defer_catch_up("a", 0.4)
    assert sent == [
        (
            "embedq.catch_up",
            {"args": ["a"], "queue": "index", "routing_key": "index", "countdown": 0.4},
        )
    ]
