"""Embed tasks sized by tokens: short documents go many to a task, long ones few."""

from __future__ import annotations

from embedq.storage.readers import Record
from embedq.tasks.indexing import estimated_tokens, split_by_budget


def record(text: str, title: str | None = None) -> Record:
    return Record("r", text, title, None, "test", 1)


def test_tokens_are_estimated_from_the_length_of_title_and_text() -> None:
    assert estimated_tokens(record("x" * 400)) == 102
    assert estimated_tokens(record("x" * 400, title="t" * 40)) == 112
    assert estimated_tokens(record("")) == 2


def test_runs_close_at_the_item_cap_or_the_weight_budget() -> None:
    assert split_by_budget([1] * 7, max_items=3, max_weight=100) == [
        range(0, 3),
        range(3, 6),
        range(6, 7),
    ]
    assert split_by_budget([40, 40, 40, 40, 40], max_items=10, max_weight=100) == [
        range(0, 3),
        range(3, 5),
    ]
    # An item heavier than the budget makes a run of its own; nothing is ever left out.
    assert split_by_budget([500, 1, 1], max_items=10, max_weight=100) == [range(0, 1), range(1, 3)]
    assert split_by_budget([], max_items=10, max_weight=100) == []
