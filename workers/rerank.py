"""Cross-encoder re-ranking: score (query, passage) pairs with a sequence-classification
checkpoint (sentence-transformers' ``CrossEncoder``), loaded once per process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedq.workers.models import ModelError, choose_device, offline, resolve_path

BATCH = 32
_cache: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def cross_encoder(spec: str, device: str = "auto") -> Any:
    """The loaded cross-encoder for ``spec`` (a local folder or a hub id in its cache)."""
    from sentence_transformers import CrossEncoder

    chosen = choose_device(device)
    with _lock:
        model = _cache.get((spec, chosen))
        if model is None:
            try:
                model = CrossEncoder(resolve_path(spec), device=chosen, local_files_only=offline())
            except (ModelError, OSError, ValueError) as exc:
                raise ModelError(f"cannot load cross-encoder {spec!r}: {exc}") from exc
            _cache[(spec, chosen)] = model
        return model


def rerank_scores(model: Any, query: str, passages: Sequence[str]) -> np.ndarray:
    """One relevance score per passage (higher is better)."""
    if not passages:
        return np.empty(0, dtype=np.float32)
    pairs = [(query, p) for p in passages]
    scores = model.predict(pairs, batch_size=BATCH, show_progress_bar=False)
    return np.asarray(scores, dtype=np.float32).reshape(len(passages), -1)[:, -1]
