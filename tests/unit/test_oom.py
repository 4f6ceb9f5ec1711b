"""A forward pass that runs out of GPU memory is retried in halves (a fake OOM stands in for
the GPU: it raises torch's own OutOfMemoryError above a number of rows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from embedq.workers.encoding import Embedder
from embedq.workers.oom import forward_halving


def _limited(limit: int, calls: list[int]):  # type: ignore[no-untyped-def]
    def forward(rows: list[int]) -> np.ndarray:
        calls.append(len(rows))
        if len(rows) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return np.array([[float(r)] for r in rows], dtype=np.float32)

    return forward


def test_halves_until_the_rows_fit_and_keeps_their_order() -> None:
    calls: list[int] = []
    released: list[bool] = []
    out = forward_halving(_limited(3, calls), list(range(10)), lambda: released.append(True))
    assert out[:, 0].tolist() == list(range(10))
    assert calls == [10, 5, 2, 3, 5, 2, 3]
    assert len(released) == 3


def test_a_single_row_that_does_not_fit_fails() -> None:
    with pytest.raises(torch.OutOfMemoryError):
        forward_halving(_limited(0, []), [1, 2], lambda: None)


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken(rows: list[int]) -> np.ndarray:
        calls.append(len(rows))
        raise RuntimeError("not memory")

    with pytest.raises(RuntimeError):
        forward_halving(broken, [1, 2, 3, 4], lambda: None)
    assert calls == [4]


def test_the_embedder_retries_an_out_of_memory_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = Embedder(None, device="cpu", precision="fp32")
    texts = [f"sentence number {i} about the sea" for i in range(12)]
    expected = embedder.encode_texts(texts)
    real = embedder._run
    sizes: list[int] = []

    def tight(batch: list[Sequence[int]]) -> np.ndarray:
        sizes.append(len(batch))
        if len(batch) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real(batch)

    monkeypatch.setattr(embedder, "_run", tight)
    got = embedder.encode_texts(texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert sizes[0] == 12 and max(sizes[1:]) <= 6
