"""The encoder against sentence-transformers' own encode, on the bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedq.workers.backends import OnnxBackend, TorchBackend
from embedq.workers.encoding import Embedder
from embedq.workers.models import (
    DEFAULT_MODEL,
    ModelError,
    canonical_spec,
    choose_precision,
    precision_name,
    resolve_path,
)
from embedq.workers.onnx_cache import int8_name

TEXTS = [
    "A cat sits on the warm windowsill.",
    "Quarterly revenue rose by twelve percent.",
    "x",
    "The orbit of the moon is slightly elliptical, and its distance varies. " * 3,
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(None, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def reference() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_path(None), device="cpu").float()


def test_bundled_model_limits(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    chunker = embedder.chunker()
    assert (chunker.max_tokens, chunker.overlap) == (256, 32)
    assert embedder.chunker() is chunker  # made once per process
    with pytest.raises(ModelError):
        embedder.chunker(513)


def test_cpu_fp32_runs_the_onnx_copy_and_matches_sentence_transformers(
    embedder: Embedder, reference: Any
) -> None:
    assert isinstance(embedder.backend, OnnxBackend)
    ours = embedder.encode_texts(TEXTS)
    ref = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert (ours * ref).sum(axis=1).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_torch_engine_matches_the_onnx_copy(embedder: Embedder) -> None:
    torch_embedder = Embedder(None, device="cpu", precision="fp32", engine="torch")
    assert isinstance(torch_embedder.backend, TorchBackend)
    ids = [w.input_ids for ws in embedder.chunker().split_many(TEXTS) for w in ws]
    np.testing.assert_allclose(torch_embedder.encode_ids(ids), embedder.encode_ids(ids), atol=2e-5)


def test_truncation_matches_the_tokenizer(embedder: Embedder, reference: Any) -> None:
    long_text = "word " * 600
    heads = embedder.chunker().heads([long_text, "short text"], 64)
    expected = reference.tokenizer([long_text, "short text"], truncation=True, max_length=64)[
        "input_ids"
    ]
    assert heads == [list(ids) for ids in expected]


def test_int8_is_close_to_fp32(embedder: Embedder) -> None:
    int8 = Embedder(None, device="cpu", precision="int8")
    assert int8.backend.path.name == int8_name()  # type: ignore[attr-defined]
    a, b = int8.encode_texts(TEXTS), embedder.encode_texts(TEXTS)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.97 and not np.allclose(a, b, atol=1e-4)


def test_batching_does_not_change_vectors(embedder: Embedder) -> None:
    chunker = embedder.chunker(64, 8)
    texts = [("word " * n).strip() for n in (3, 90, 17, 250, 1)]
    ids = [w.input_ids for ws in chunker.split_many(texts) for w in ws]
    big = embedder.encode_ids(ids, batch_tokens=100_000)
    small = embedder.encode_ids(ids, batch_tokens=64)
    np.testing.assert_allclose(big, small, atol=2e-5)


def test_threads_sharing_a_model_run_one_pass_at_a_time(embedder: Embedder) -> None:
    """An embed worker's threads share one model: one caller's passes run while the other
    waits, and each gets its own rows back."""
    chunker = embedder.chunker(64, 8)
    texts = [[f"thread {t} text {n} " + "word " * (n * 7) for n in range(12)] for t in range(2)]
    inputs = [[w.input_ids for ws in chunker.split_many(group) for w in ws] for group in texts]
    alone = [embedder.encode_ids(ids, batch_tokens=128) for ids in inputs]
    backend, lock = embedder.backend, threading.Lock()
    busy, overlaps, passes = [0], [0], [0]

    class Spy:
        token_types = backend.token_types

        def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with lock:
                busy[0] += 1
                overlaps[0] += busy[0] > 1
                passes[0] += 1
            time.sleep(0.002)  # room for the other thread to come in, if it could
            try:
                return backend.run(ids, mask)
            finally:
                with lock:
                    busy[0] -= 1

    embedder.backend = Spy()
    try:
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda ids: embedder.encode_ids(ids, 128), inputs))
    finally:
        embedder.backend = backend
    assert passes[0] > 4 and overlaps[0] == 0
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_padding_to_a_multiple_does_not_change_vectors(embedder: Embedder) -> None:
    """CUDA pads each batch's width to a multiple of 8; the mask must hide the padding."""
    ids = [
        w.input_ids for ws in embedder.chunker(64, 8).split_many(["a b c", "d " * 37]) for w in ws
    ]
    assert embedder.pad_multiple == 1  # CPUs gain nothing from it
    plain = embedder.encode_ids(ids)
    backend, widths = embedder.backend, []

    class Spy:
        token_types = backend.token_types

        def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            widths.append(ids.shape[1])
            return backend.run(ids, mask)

    embedder.pad_multiple, embedder.backend = 64, Spy()
    try:
        padded = embedder.encode_ids(ids)
    finally:
        embedder.pad_multiple, embedder.backend = 1, backend
    assert widths and all(w % 64 == 0 for w in widths)  # the padding did happen
    np.testing.assert_allclose(padded, plain, atol=2e-5)


def test_a_cold_query_imports_neither_torch_nor_transformers(embedder: Embedder) -> None:
    code = (
        "import sys\n"
        "from embedq.workers.encoding import Embedder\n"
        "e = Embedder(None, device='auto', precision='fp32')\n"
        "assert e.encode_texts(['a query']).shape == (1, 384)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_specs() -> None:
    assert canonical_spec(None) == DEFAULT_MODEL
    assert canonical_spec("default") == DEFAULT_MODEL
    assert canonical_spec("All-MiniLM-L6-v2") == DEFAULT_MODEL
    assert canonical_spec("./models/x") == "./models/x"
    with pytest.raises(ModelError):
        Embedder("./no/such/folder")


def test_precision_choice() -> None:
    import torch

    assert choose_precision("cuda", "auto") == torch.float16
    assert choose_precision("cpu", "fp32") == torch.float32
    assert choose_precision("cpu", "bf16") == torch.bfloat16
    assert precision_name("cpu", "int8") == "int8"
    with pytest.raises(ModelError):
        choose_precision("cpu", "int3")
    with pytest.raises(ModelError, match="CPU only"):
        precision_name("cuda", "int8")


def test_a_cold_embed_of_texts_imports_neither_torch_nor_transformers(
    embedder: Embedder, tmp_path: Path
) -> None:
    """``embedq embed --text ...`` with the default strategy runs the ONNX copy on the CPU."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")},
        "EMBEDQ_DATA_DIR": str(tmp_path),
        "EMBEDQ_DEVICE": "cpu",
        "EMBEDQ_PRECISION": "fp32",
    }
    code = (
        "import sys\n"
        "from embedq.api.cli import main\n"
        "rc = main(['embed', '--text', 'A cat sleeps.', '--json'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
        " if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert len(json.loads(out.stdout)["vectors"][0]) == 384


def test_auto_precision_on_each_kind_of_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedq.workers import models

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: True)
    assert precision_name("cpu") == "int8"
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: False)
    assert precision_name("cpu") == "fp32"
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert precision_name("cpu") == "bf16"
    assert precision_name("cuda") == "fp16"


def test_queries_skip_torch_where_auto_means_bf16_on_a_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold ``embedq search`` loads the ONNX copy even where documents are embedded in bf16
    on torch, and the two agree on the vectors."""
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings
    from embedq.workers import models

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    rt = Runtime(Settings(data_dir=tmp_path, device="cpu", precision="auto"))
    documents, queries = rt.embedder(DEFAULT_MODEL), rt.query_embedder(DEFAULT_MODEL)
    assert isinstance(documents.backend, TorchBackend) and documents.precision == "bf16"
    assert isinstance(queries.backend, OnnxBackend) and queries.precision == "fp32"
    assert rt.query_embedder(DEFAULT_MODEL) is queries
    texts = ["A cat sits on the warm windowsill.", "Quarterly revenue rose."]
    cosine = (documents.encode_texts(texts) * queries.encode_texts(texts)).sum(axis=1)
    assert cosine.min() > 0.999
    fixed = Runtime(Settings(data_dir=tmp_path, device="cpu", precision="fp32"))
    assert fixed.query_embedder(DEFAULT_MODEL) is fixed.embedder(DEFAULT_MODEL)
