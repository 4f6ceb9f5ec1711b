"""Names shared by the workers and the front doors, written once (no torch import here)."""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal["sentence-transformers", "mean", "cls", "pooler", "second-to-last"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""Pooling strategies of :mod:`embedq.workers.pooling`, the model's own first."""

DEFAULT_TEMPLATE = "This text is about {}."
"""The zero-shot sentence a label is put into (``{}`` marks it)."""
