"""Out-of-memory on the GPU inside one forward pass: split the pass in halves and retry.

A token budget that fits most batches can still run out of memory on one (another process
took memory, fragmentation, an unusually wide batch). Failing that batch for good would lose
its documents after a few redeliveries that all fail the same way. Instead the rows are split
in two halves (each half is half the tokens), the allocator's cache is released, and each
half is tried again, down to a single row; only a single row that does not fit fails.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)

Row = TypeVar("Row")


def _torch_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error. Looked up, not imported: a process that
    never imported torch (the ONNX backend, a cold query) cannot have run out of GPU memory."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def _release() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def forward_halving(
    forward: Callable[[list[Row]], np.ndarray],
    rows: Sequence[Row],
    release: Callable[[], None] = _release,
) -> np.ndarray:
    """``forward(rows)``, or on ``torch.OutOfMemoryError`` the halves of ``rows`` each run the
    same way and stacked in order; a single row that runs out of memory raises."""
    batch = list(rows)
    try:
        return forward(batch)
    except Exception as exc:
        if not _torch_oom(exc) or len(batch) <= 1:
            raise
    # Outside the except block: its traceback held the failed pass's tensors alive.
    release()
    half = len(batch) // 2
    log.warning(
        "out of GPU memory on %d rows: retrying as %d + %d", len(batch), half, len(batch) - half
    )
    first = forward_halving(forward, batch[:half], release)
    second = forward_halving(forward, batch[half:], release)
    return np.concatenate([first, second])
