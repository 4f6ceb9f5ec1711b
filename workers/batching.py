"""Token-budgeted grouping and padding of token id sequences, shared by every backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def token_budget_batches(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indexes grouped longest first so that ``count * longest <= budget`` per group."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    group: list[int] = []
    for i in order:
        longest = lengths[group[0]] if group else lengths[i]
        if group and (len(group) + 1) * longest > budget:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def pad_batch(
    batch: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` as int64 arrays, rows padded to the longest sequence
    rounded up to ``multiple`` (tensor cores want multiples of 8)."""
    width = max(len(ids) for ids in batch)
    width = -(-width // multiple) * multiple
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
