"""The encoder against sentence-transformers' own encode, on the bundled model."""

from __future__ import annotations

import numpy as np
import pytest

from workers.encoding import Embedder
from workers.models import DEFAULT_MODEL, ModelError, canonical_spec, choose_precision


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(None, device="cpu", precision="fp32")


def test_bundled_model_limits(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    chunker = embedder.chunker()
    assert (chunker.max_tokens, chunker.overlap) == (256, 32)
    with pytest.raises(ModelError):
        embedder.chunker(513)


def test_encode_matches_sentence_transformers(embedder: Embedder) -> None:
    texts = [
        "A cat sits on the warm windowsill.",
        "Quarterly revenue rose by twelve percent.",
        "x",
        "The orbit of the moon is slightly elliptical, and its distance varies. " * 3,
    ]
    ours = embedder.encode_texts(texts)
    ref = embedder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_vectors(embedder: Embedder) -> None:
    chunker = embedder.chunker(64, 8)
    texts = [("word " * n).strip() for n in (3, 90, 17, 250, 1)]
    ids = [w.input_ids for ws in chunker.split_many(texts) for w in ws]
    big = embedder.encode_ids(ids, batch_tokens=100_000)
    small = embedder.encode_ids(ids, batch_tokens=64)
    np.testing.assert_allclose(big, small, atol=2e-5)


def test_padding_to_a_multiple_does_not_change_vectors(embedder: Embedder) -> None:
    """CUDA pads each batch's width to a multiple of 8; the mask must hide the padding."""
    ids = [
        w.input_ids for ws in embedder.chunker(64, 8).split_many(["a b c", "d " * 37]) for w in ws
    ]
    assert embedder.pad_multiple == 1  # CPUs gain nothing from it
    plain = embedder.encode_ids(ids)
    model, widths = embedder.model, []

    def spy(features: dict) -> dict:
        widths.append(features["input_ids"].shape[1])
        return model(features)

    embedder.pad_multiple, embedder.model = 64, spy
    try:
        padded = embedder.encode_ids(ids)
    finally:
        embedder.pad_multiple, embedder.model = 1, model
    assert widths and all(w % 64 == 0 for w in widths)  # the padding did happen
    np.testing.assert_allclose(padded, plain, atol=2e-5)


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
    with pytest.raises(ModelError):
        choose_precision("cpu", "int3")
