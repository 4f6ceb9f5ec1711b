"""Sentence vectors from a plain transformers checkpoint, by named pooling strategy.

Strategies (``STRATEGIES``):

- ``sentence-transformers``: the model's own sentence-transformers modules, through
  :class:`workers.encoding.Embedder` (a plain checkpoint gets mean pooling from
  sentence-transformers itself). These vectors are always L2-normalised, as the Embedder makes
  them.
- ``mean``: the attention-masked mean of the last hidden state (special tokens included,
  padding excluded).
- ``cls``: the last hidden state of the first token.
- ``pooler``: the model's pooler output; refused when the checkpoint has no trained pooler
  weights, since the pooler would then be randomly initialised.
- ``second-to-last``: the attention-masked mean of the second-to-last hidden state.

Pooling is done in float32 whatever precision the model runs in.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from workers.chunking import Chunker, Window
from workers.encoding import DEFAULT_BATCH_TOKENS, Embedder, token_budget_batches
from workers.models import (
    MAX_WINDOW,
    ModelError,
    choose_device,
    choose_precision,
    offline,
    resolve_path,
)

STRATEGIES = ("sentence-transformers", "mean", "cls", "pooler", "second-to-last")
WEIGHTINGS = ("mean", "tokens")
Weighting = Literal["mean", "tokens"]


class PoolingError(ValueError):
    """A strategy, layer or window setting this model cannot honour."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one forward pass pools: ``kind`` in cls/mean/pooler, over hidden state ``layer``."""

    kind: str
    layer: int | None

    @property
    def needs_hidden_states(self) -> bool:
        return self.layer is not None


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: Any
    tokenizer: Any
    missing_keys: frozenset[str]
    max_tokens: int
    token_types: bool


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


def _configured_length(folder: str) -> int | None:
    """``max_seq_length`` from a sentence-transformers ``sentence_bert_config.json``, if any."""
    config = Path(folder) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return int(value) if value else None


def _accepts(model: Any, name: str) -> bool:
    """Whether the model's forward takes the argument ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1, in float32."""
    weights = mask.unsqueeze(-1).to(torch.float32)
    total = (hidden.to(torch.float32) * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def tokenize(tokenizer: Any, texts: Sequence[str], limit: int) -> list[list[int]]:
    """Token ids with special tokens, each text truncated to ``limit`` tokens."""
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=limit, padding=False)
    return [list(ids) for ids in enc["input_ids"]]


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise PoolingError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


class HFEncoder:
    """A transformers checkpoint (``AutoModel`` + ``AutoTokenizer``), loaded lazily, once.

    ``spec`` is anything :func:`workers.models.resolve_path` accepts. A sentence-transformers
    folder is read through its ``Transformer`` module's folder.
    """

    def __init__(
        self, spec: str | None = None, device: str = "auto", precision: str = "auto"
    ) -> None:
        self.spec = spec
        self.path = resolve_path(spec)
        self.device = choose_device(device)
        self.dtype = choose_precision(self.device, precision)
        self._precision = precision
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._embedder: Embedder | None = None

    # Loading -------------------------------------------------------------------------------

    def _state(self) -> _Loaded:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        from transformers import AutoModel, AutoTokenizer

        folder = transformer_folder(self.path)
        local = offline()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local)
            model, info = AutoModel.from_pretrained(
                folder, output_loading_info=True, local_files_only=local
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {self.spec!r}: {exc}") from exc
        model = model.to(device=self.device, dtype=self.dtype)
        model.eval()
        limits = [
            MAX_WINDOW,
            int(getattr(model.config, "max_position_embeddings", MAX_WINDOW) or MAX_WINDOW),
            int(min(tokenizer.model_max_length, MAX_WINDOW)),
            _configured_length(folder) or MAX_WINDOW,
        ]
        missing = frozenset(str(key) for key in info.get("missing_keys", ()))
        token_types = "token_type_ids" in tokenizer.model_input_names and _accepts(
            model, "token_type_ids"
        )
        return _Loaded(model, tokenizer, missing, min(limits), token_types)

    @property
    def model(self) -> Any:
        return self._state().model

    @property
    def tokenizer(self) -> Any:
        return self._state().tokenizer

    @property
    def missing_keys(self) -> frozenset[str]:
        """Weights the model expected but the checkpoint did not hold (randomly initialised)."""
        return self._state().missing_keys

    @property
    def max_tokens(self) -> int:
        """The longest input, special tokens included: the smallest of the model's limits."""
        return self._state().max_tokens

    @property
    def num_layers(self) -> int:
        """Entries of ``hidden_states``: the embeddings plus one per transformer layer."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def embedder(self) -> Embedder:
        """The sentence-transformers view of the same model (loaded on first use)."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = Embedder(self.spec, self.device, self._precision)
        return self._embedder

    def pooler_problem(self) -> str | None:
        """Why the ``pooler`` strategy cannot be used, or None when it can."""
        if getattr(self.model, "pooler", None) is None:
            return f"model {self.path} has no pooler layer"
        if any("pooler." in key for key in self.missing_keys):
            return (
                f"checkpoint {self.path} has no trained pooler weights; "
                "the pooler output would be random"
            )
        return None

    # Encoding ------------------------------------------------------------------------------

    def plan(self, strategy: str, layer: int | None = None) -> Plan:
        """Check ``strategy`` and ``layer`` against this model; what to pool."""
        check_strategy(strategy)
        if layer is not None:
            if strategy not in ("mean", "cls"):
                raise PoolingError(f"strategy {strategy!r} does not take a layer")
            self.check_layer(layer)
        if strategy == "pooler":
            problem = self.pooler_problem()
            if problem:
                raise PoolingError(problem)
        if strategy == "second-to-last":
            return Plan("mean", -2)
        return Plan(strategy, layer)

    def check_layer(self, layer: int) -> None:
        count = self.num_layers
        if not -count <= layer < count:
            raise PoolingError(f"layer {layer} is out of range for {count} hidden states")

    def limit(self, max_tokens: int | None) -> int:
        """``max_tokens`` checked against the model's limit (the limit when None)."""
        if max_tokens is None:
            return self.max_tokens
        if not 0 < max_tokens <= self.max_tokens:
            raise PoolingError(
                f"max_tokens must be between 1 and the model's limit of {self.max_tokens}"
            )
        return max_tokens

    def encode(
        self,
        texts: Sequence[str],
        strategy: str,
        *,
        max_tokens: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        normalize: bool = False,
        layer: int | None = None,
    ) -> np.ndarray:
        """One float32 vector per text, in input order; texts truncated to ``max_tokens``.

        ``layer`` (``mean`` and ``cls`` only) pools ``hidden_states[layer]`` instead of the
        last hidden state. ``normalize`` L2-normalises the vectors.
        """
        if strategy == "sentence-transformers":
            if layer is not None:
                raise PoolingError("strategy 'sentence-transformers' does not take a layer")
            if not texts:
                return self.embedder.encode_ids([])
            limit = min(max_tokens or self.embedder.max_tokens, self.embedder.max_tokens)
            return self.embedder.encode_texts(list(texts), max_tokens=limit)
        self.plan(strategy, layer)
        ids = tokenize(self.tokenizer, texts, self.limit(max_tokens))
        return self.encode_ids(
            ids, strategy, batch_tokens=batch_tokens, normalize=normalize, layer=layer
        )

    @torch.inference_mode()
    def encode_ids(
        self,
        inputs: Sequence[Sequence[int]],
        strategy: str,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        normalize: bool = False,
        layer: int | None = None,
    ) -> np.ndarray:
        """Pool token id sequences (special tokens included) in length-sorted batches."""
        if strategy == "sentence-transformers":
            if layer is not None:
                raise PoolingError("strategy 'sentence-transformers' does not take a layer")
            return self.embedder.encode_ids(inputs, batch_tokens)
        plan = self.plan(strategy, layer)
        out = np.empty((len(inputs), int(self.model.config.hidden_size)), dtype=np.float32)
        for group in token_budget_batches([len(ids) for ids in inputs], batch_tokens):
            out[group] = self._forward([inputs[i] for i in group], plan)
        return l2_normalise(out) if normalize else out

    def _forward(self, batch: list[Sequence[int]], plan: Plan) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        features = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self._state().token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        outputs = self.model(**features, output_hidden_states=plan.needs_hidden_states)
        return pool(outputs, features["attention_mask"], plan).cpu().numpy()

    # Long texts ----------------------------------------------------------------------------

    def encode_long(
        self,
        texts: Sequence[str],
        strategy: str,
        *,
        max_tokens: int,
        overlap: int,
        weighting: Weighting = "mean",
        normalize: bool = False,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        layer: int | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], list[list[Window]]]:
        """Document vectors for texts of any length, from overlapping token windows.

        Each text is cut by :class:`workers.chunking.Chunker` into windows of at most
        ``max_tokens`` tokens (special tokens included) overlapping by ``overlap`` text tokens,
        and each window is pooled by ``strategy`` on its own. The document vector is the mean of
        its window vectors (``weighting="mean"``) or their mean weighted by the number of text
        tokens in each window, special tokens not counted (``weighting="tokens"``). With
        ``normalize``, the window vectors are L2-normalised first and the document vector is
        the L2-normalised (weighted) mean of those unit vectors.

        Returns the document vectors (one row per text, input order), the window vectors of
        each document (one array per text, rows in window order) and the windows themselves.
        """
        if weighting not in WEIGHTINGS:
            raise PoolingError(f"unknown weighting {weighting!r}; use one of mean, tokens")
        chunker = self.chunker(max_tokens, overlap, strategy)
        windows = chunker.split_many(list(texts))
        flat = [w.input_ids for doc in windows for w in doc]
        vectors = self.encode_ids(
            flat, strategy, batch_tokens=batch_tokens, normalize=normalize, layer=layer
        )
        per_doc = _split_rows(vectors, [len(doc) for doc in windows])
        docs = np.empty((len(windows), vectors.shape[1]), dtype=np.float32)
        for row, (rows, doc) in enumerate(zip(per_doc, windows, strict=True)):
            docs[row] = _combine(rows, doc, chunker.special, weighting)
        return (l2_normalise(docs) if normalize else docs), per_doc, windows

    def chunker(self, max_tokens: int, overlap: int, strategy: str = "mean") -> Chunker:
        """A chunker on the tokenizer that ``strategy`` uses, checked against its limit."""
        check_strategy(strategy)
        if strategy == "sentence-transformers":
            emb = self.embedder
            if not 0 < max_tokens <= emb.max_tokens:
                raise PoolingError(
                    f"max_tokens must be between 1 and the model's limit of {emb.max_tokens}"
                )
            tokenizer = emb.tokenizer
        else:
            tokenizer = self.tokenizer
            self.limit(max_tokens)
        try:
            return Chunker(tokenizer, max_tokens, overlap)
        except ValueError as exc:
            raise PoolingError(str(exc)) from exc


def pool(outputs: Any, mask: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The pooled float32 vectors of one forward pass."""
    if plan.kind == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise PoolingError("the model returned no pooler output")
        return pooled.to(torch.float32)
    layer = plan.layer
    hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
    if plan.kind == "cls":
        return hidden[:, 0].to(torch.float32)
    return masked_mean(hidden, mask)


def _split_rows(vectors: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    bounds = np.cumsum([0, *counts]).tolist()
    return [vectors[a:b] for a, b in itertools.pairwise(bounds)]


def _combine(
    vectors: np.ndarray, windows: Sequence[Window], special: int, weighting: str
) -> np.ndarray:
    if weighting == "tokens":
        weights = np.array([max(w.tokens - special, 1) for w in windows], dtype=np.float64)
    else:
        weights = np.ones(len(windows), dtype=np.float64)
    mean = (vectors.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
    return mean.astype(np.float32)


@functools.lru_cache(maxsize=4)
def cached_encoder(spec: str | None, device: str = "auto", precision: str = "auto") -> HFEncoder:
    """One encoder per (spec, device, precision) in this process."""
    return HFEncoder(spec, device, precision)
