"""Batched, length-sorted, token-budgeted encoding to L2-normalised float32 vectors.

One loader and one forward path for every caller (indexing, search, analysis): the
sentence-transformers model in ``TorchBackend`` (CUDA, bf16/fp16) or its ONNX copy in
``OnnxBackend`` (CPU fp32 and int8; see ``embedq.workers.onnx_cache``). Both take the same padded
arrays, tokenised once by the model's own fast tokenizer (``tokenizers``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedq.workers.backends import Backend, OnnxBackend, TorchBackend
from embedq.workers.batching import pad_batch, token_budget_batches
from embedq.workers.chunking import Chunker, window_settings
from embedq.workers.models import (
    MAX_WINDOW,
    ModelError,
    choose_device,
    choose_precision,
    offline,
    precision_name,
    resolve_path,
    window_limit,
)
from embedq.workers.oom import forward_halving
from embedq.workers.shape import read_shape, transformer_folder

__all__ = ["CPU_BATCH_TOKENS", "GPU_BATCH_TOKENS", "Embedder", "token_budget_batches"]

log = logging.getLogger(__name__)
CPU_BATCH_TOKENS = 4096
"""Smaller forward passes measured faster on CPUs (cache-sized activations)."""
GPU_BATCH_TOKENS = 65536
"""On an H200, fp16, 65,536 tokens a pass embedded 4.0M tokens/s against 3.1M at 16,384."""
ENGINES = ("auto", "torch")


def default_batch_tokens(device: str) -> int:
    """Tokens per forward pass when not set: 4,096 on CPUs, 65,536 on GPUs."""
    return CPU_BATCH_TOKENS if device == "cpu" else GPU_BATCH_TOKENS


class Embedder:
    """A sentence-transformers model ready to embed pre-tokenised windows and queries.

    ``engine="torch"`` always loads the torch model (pooling strategies need its hidden
    states); ``"auto"`` runs CPU fp32 and int8 on an ONNX copy when the model folder allows
    it (fp32 falls back to torch when it does not; int8 is then refused).
    """

    def __init__(
        self,
        spec: str | None,
        device: str = "auto",
        precision: str = "auto",
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ModelError(f"unknown engine {engine!r}; use auto or torch")
        self.spec = spec
        path = resolve_path(spec)
        self.device = choose_device(device)
        self.precision = precision_name(self.device, precision)
        # int8 chosen by ``auto`` falls back to fp32 for a model it cannot quantise.
        self._int8_optional = precision == "auto"
        if engine == "torch" and self.precision == "int8":
            self.precision = "fp32"
        self.model: Any = None
        self.batch_tokens = default_batch_tokens(self.device)
        # Tensor cores want dimensions in multiples of 8; CPUs gain nothing from the padding.
        self.pad_multiple = 1 if self.device == "cpu" else 8
        self._chunkers: dict[tuple[int, int], Chunker] = {}
        self._forward = threading.Lock()
        onnx = engine == "auto" and self.device == "cpu" and self.precision in ("fp32", "int8")
        if not (onnx and self._load_onnx(path)):
            self._load_torch(path)

    # Loading -------------------------------------------------------------------------------

    def _load_onnx(self, path: str) -> bool:
        """The ONNX copy of a local sentence-transformers folder; False to use torch."""
        shape = read_shape(path)
        folder = Path(transformer_folder(path)) if shape else None
        if shape is None or folder is None or not (folder / "tokenizer.json").is_file():
            if self.precision == "int8" and self._int8_optional:
                self.precision = "fp32"
            elif self.precision == "int8":
                raise ModelError(
                    f"precision int8 needs a local sentence-transformers folder with a "
                    f"tokenizer.json; {self.spec!r} is not one"
                )
            return False
        from embedq.workers.onnx_cache import onnx_file

        try:
            self.backend: Backend = OnnxBackend(onnx_file(path, self.precision == "int8"))
        except (ModelError, OSError, ImportError) as exc:
            if self.precision == "int8" and not self._int8_optional:
                raise ModelError(f"cannot make the int8 model of {self.spec!r}: {exc}") from exc
            log.warning("running %s on torch in fp32: %s", self.spec, exc)
            self.precision = "fp32"
            return False
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.dim, self.max_tokens = shape.dim, shape.max_tokens
        self.pad_id = _pad_id(folder, self.tokenizer)
        return True

    def _load_torch(self, path: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(
                path,
                device=self.device,
                local_files_only=offline(),
                trust_remote_code=False,
                model_kwargs={"use_safetensors": True},
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {self.spec!r}: {exc}") from exc
        # Always cast: a checkpoint stored in half precision may load in it.
        model = model.to(choose_precision(self.device, self.precision))
        model.eval()
        self.model = model
        self.backend = TorchBackend(model, self.device)
        hf_tokenizer = model.tokenizer
        if not getattr(hf_tokenizer, "is_fast", False):
            raise ModelError(f"model {self.spec!r} has no fast tokenizer")
        self.tokenizer = hf_tokenizer.backend_tokenizer
        dim = model.get_embedding_dimension()
        if dim is None:
            raise ModelError(f"model {self.spec!r} does not report its embedding dimension")
        self.dim = int(dim)
        positions = getattr(self.transformer.config, "max_position_embeddings", MAX_WINDOW)
        self.max_tokens = window_limit(model.max_seq_length, positions)
        self.pad_id = hf_tokenizer.pad_token_id or 0
        if self.device.startswith("cuda"):
            # cuDNN's attention builds a graph for every new batch shape (milliseconds of CPU
            # each); the memory-efficient kernel takes any shape at the same speed.
            torch.backends.cuda.enable_cudnn_sdp(False)
            # One CPU core tokenises about 0.3M tokens/s, a GPU embeds millions: split on
            # every core. Safe here: embed workers run in one process (threads at most), and
            # nothing forks after.
            os.environ["TOKENIZERS_PARALLELISM"] = "true"

    @property
    def transformer(self) -> Any:
        """The transformers model inside the sentence-transformers one (torch engine)."""
        if self.model is None:
            raise ModelError(f"model {self.spec!r} runs on ONNX Runtime, not torch")
        first = self.model[0]
        return getattr(first, "auto_model", None) or first.model

    # Encoding ------------------------------------------------------------------------------

    def chunker(self, chunk_tokens: int | None = None, overlap: int | None = None) -> Chunker:
        """A chunker for this model (made once per setting); defaults: the model's limit and
        an eighth of it."""
        size, overlap = window_settings(self.max_tokens, chunk_tokens, overlap)
        key = (size, overlap)
        if key not in self._chunkers:
            self._chunkers[key] = Chunker(self.tokenizer, size, overlap)
        return self._chunkers[key]

    def encode_ids(
        self, inputs: Sequence[Sequence[int]], batch_tokens: int | None = None
    ) -> np.ndarray:
        """Embed token id sequences (special tokens included); rows in input order."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        lengths = [len(ids) for ids in inputs]
        # One caller's passes at a time (a worker's threads share the model): the device
        # is never asked for two batches' memory at once, and another thread cuts meanwhile.
        with self._forward:
            for group in token_budget_batches(lengths, batch_tokens or self.batch_tokens):
                out[group] = forward_halving(self._run, [inputs[i] for i in group])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _run(self, rows: list[Sequence[int]]) -> np.ndarray:
        ids, mask = pad_batch(rows, self.pad_id, self.pad_multiple)
        return self.backend.run(ids, mask)

    def encode_texts(
        self,
        texts: Sequence[str],
        max_tokens: int | None = None,
        batch_tokens: int | None = None,
    ) -> np.ndarray:
        """Embed whole texts truncated to ``max_tokens`` (queries, short inputs)."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        limit = min(max_tokens or self.max_tokens, self.max_tokens)
        return self.encode_ids(self.chunker().heads(texts, limit), batch_tokens)


def _pad_id(folder: Path, tokenizer: Tokenizer) -> int:
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    token = config.get("pad_token")
    if isinstance(token, dict):
        token = token.get("content")
    found = tokenizer.token_to_id(token) if isinstance(token, str) else None
    return int(found) if found is not None else 0
