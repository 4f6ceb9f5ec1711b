"""A model's shape (vector dimension, window limit, special tokens per window) read from a
local sentence-transformers folder's configuration, without loading torch or the weights.

Producers need only the shape to create a collection; loading the model for it cost a
distributed producer about 9 s of CPU, on the cores the embed workers use. Anything unusual
(a hub ID, a Dense layer, several pooling modes, a missing file) gives ``None``: the caller
loads the model and asks it instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from embedq.workers.chunking import special_affixes
from embedq.workers.models import MAX_WINDOW, ModelError, resolve_path, window_limit

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@dataclass(frozen=True, slots=True)
class ModelShape:
    dim: int
    max_tokens: int
    special: int
    """Special tokens around each window ([CLS] and [SEP] for BERT)."""


def transformer_folder(path: str) -> str:
    """The folder of the transformer under ``path``.

    For a sentence-transformers folder (one with ``modules.json``) that is the folder of its
    ``Transformer`` module, often the folder itself; for anything else, ``path`` unchanged.
    """
    modules = Path(path) / "modules.json"
    if not modules.is_file():
        return path
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {modules}: {exc}") from exc
    for entry in entries:
        if str(entry.get("type", "")).endswith(".Transformer"):
            return str(Path(path) / str(entry.get("path", "")))
    return path


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_shape(spec: str | None) -> ModelShape | None:
    """The shape of a plain Transformer + Pooling (+ Normalize) folder, else ``None``."""
    try:
        folder = Path(resolve_path(spec))
    except ModelError:
        return None
    if not folder.is_dir():
        return None
    try:
        modules = _json(folder / "modules.json")
        types = [m["type"] for m in modules]
        if types not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]):
            return None
        base = folder / modules[0]["path"]
        pooling = _json(folder / modules[1]["path"] / "config.json")
        if sum(bool(pooling.get(mode)) for mode in POOLING_MODES) != 1:
            return None
        config = _json(base / "config.json")
        dim = int(pooling["word_embedding_dimension"])
        limit = _json(base / "sentence_bert_config.json").get("max_seq_length")
        if not limit or dim != int(config["hidden_size"]):
            return None
        positions = int(config.get("max_position_embeddings", MAX_WINDOW))
        return ModelShape(dim, window_limit(int(limit), positions), _special_tokens(base))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _special_tokens(folder: Path) -> int:
    path = folder / "tokenizer.json"
    if not path.is_file():  # the tokenizers package raises a bare Exception for it
        raise FileNotFoundError(path)
    backend = Tokenizer.from_file(str(path))
    backend.no_truncation()
    backend.no_padding()
    prefix, suffix = special_affixes(backend)
    return len(prefix) + len(suffix)
