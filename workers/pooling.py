"""Sentence vectors from a plain transformers checkpoint, by named pooling strategy.

Strategies (``STRATEGIES``):

- ``sentence-transformers``: the model's own sentence-transformers modules, through
  :class:`embedq.workers.encoding.Embedder` (a plain checkpoint gets mean pooling from
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
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedq.workers.backends import TorchBackend
from embedq.workers.batching import pad_batch, token_budget_batches
from embedq.workers.checkpoints import missing_weights
from embedq.workers.chunking import Chunker, Window
from embedq.workers.constants import STRATEGIES
from embedq.workers.encoding import Embedder
from embedq.workers.models import resolve_path
from embedq.workers.shape import transformer_folder

if TYPE_CHECKING:
    import torch

__all__ = ["STRATEGIES", "HFEncoder", "PoolingError", "cached_encoder", "transformer_folder"]

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


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1, in float32."""
    import torch

    weights = mask.unsqueeze(-1).to(torch.float32)
    total = (hidden.to(torch.float32) * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise PoolingError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


class HFEncoder:
    """A transformers checkpoint (``AutoModel`` + ``AutoTokenizer``), loaded lazily, once.

    ``spec`` is anything :func:`embedq.workers.models.resolve_path` accepts. A sentence-transformers
    folder is read through its ``Transformer`` module's folder.
    """

    def __init__(
        self, spec: str | None = None, device: str = "auto", precision: str = "auto"
    ) -> None:
        self.spec = spec
        self.path = resolve_path(spec)
        self.device = device
        self.precision = precision
        self._lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._torch: Embedder | None = None
        self._missing: frozenset[str] | None = None

    # Loading -------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The sentence-transformers view of the model (ONNX on CPUs: no torch import)."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = Embedder(self.spec, self.device, self.precision)
        return self._embedder

    @property
    def loaded(self) -> Embedder:
        """The torch model (pooling needs hidden states), loaded on first use."""
        if self._torch is None:
            with self._lock:
                if self._torch is None:
                    self._torch = Embedder(self.spec, self.device, self.precision, engine="torch")
        return self._torch

    @property
    def model(self) -> Any:
        """The transformers model inside the sentence-transformers one."""
        return self.loaded.transformer

    @property
    def tokenizer(self) -> Any:
        """The model's transformers (fast) tokenizer."""
        return self.loaded.model.tokenizer

    @property
    def missing_keys(self) -> frozenset[str]:
        """Weights the model expected but the checkpoint did not hold (randomly initialised)."""
        if self._missing is None:
            self._missing = missing_weights(self.model, transformer_folder(self.path))
        return self._missing

    @property
    def max_tokens(self) -> int:
        """The longest input, special tokens included (``embedq.workers.models.window_limit``)."""
        return self.loaded.max_tokens

    @property
    def num_layers(self) -> int:
        """Entries of ``hidden_states``: the embeddings plus one per transformer layer."""
        return int(self.model.config.num_hidden_layers) + 1

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
        batch_tokens: int | None = None,
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
        ids = self.loaded.chunker().heads(texts, self.limit(max_tokens)) if texts else []
        return self.encode_ids(
            ids, strategy, batch_tokens=batch_tokens, normalize=normalize, layer=layer
        )

    def encode_ids(
        self,
        inputs: Sequence[Sequence[int]],
        strategy: str,
        *,
        batch_tokens: int | None = None,
        normalize: bool = False,
        layer: int | None = None,
    ) -> np.ndarray:
        """Pool token id sequences (special tokens included) in length-sorted batches."""
        if strategy == "sentence-transformers":
            if layer is not None:
                raise PoolingError("strategy 'sentence-transformers' does not take a layer")
            return self.embedder.encode_ids(inputs, batch_tokens)
        import torch  # only the pooling strategies need it: the default path runs without

        plan = self.plan(strategy, layer)
        out = np.empty((len(inputs), int(self.model.config.hidden_size)), dtype=np.float32)
        budget = batch_tokens or self.loaded.batch_tokens
        with torch.inference_mode():
            for group in token_budget_batches([len(ids) for ids in inputs], budget):
                out[group] = self._forward([inputs[i] for i in group], plan)
        return l2_normalise(out) if normalize else out

    def _forward(self, batch: list[Sequence[int]], plan: Plan) -> np.ndarray:
        emb = self.loaded
        ids, mask = pad_batch(batch, emb.pad_id, emb.pad_multiple)
        backend = emb.backend
        if not isinstance(backend, TorchBackend):
            raise PoolingError(f"model {self.spec!r} is not loaded in torch")
        features = backend.features(ids, mask)
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
        batch_tokens: int | None = None,
        layer: int | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], list[list[Window]]]:
        """Document vectors for texts of any length, from overlapping token windows.

        Each text is cut by :class:`embedq.workers.chunking.Chunker` into windows of at most
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
        emb = self.embedder if strategy == "sentence-transformers" else self.loaded
        if not 0 < max_tokens <= emb.max_tokens:
            raise PoolingError(
                f"max_tokens must be between 1 and the model's limit of {emb.max_tokens}"
            )
        try:
            return Chunker(emb.tokenizer, max_tokens, overlap)
        except ValueError as exc:
            raise PoolingError(str(exc)) from exc


def pool(outputs: Any, mask: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The pooled float32 vectors of one forward pass."""
    import torch

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
