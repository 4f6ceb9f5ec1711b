"""Which of a model's weights its checkpoint files do not hold (randomly initialised ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def checkpoint_keys(folder: str | Path) -> set[str] | None:
    """The tensor names stored in a transformers checkpoint folder; None when unreadable."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="np") as fh:
            return set(fh.keys())
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        import torch

        state = torch.load(str(legacy), map_location="cpu", weights_only=True, mmap=True)
        return set(state)
    return None


def missing_weights(model: Any, folder: str | Path) -> frozenset[str]:
    """Names in the model's state dict that the checkpoint in ``folder`` does not store
    (after the base-model prefix a task head's checkpoint puts before them)."""
    stored = checkpoint_keys(folder)
    if stored is None:
        return frozenset()
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    stored |= {key.removeprefix(prefix) for key in stored}
    return frozenset(key for key in model.state_dict() if key not in stored)
