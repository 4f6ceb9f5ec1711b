"""Pooling strategies against direct transformers computations, on the bundled model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from embedq.workers.models import resolve_path
from embedq.workers.pooling import STRATEGIES, HFEncoder, PoolingError, transformer_folder

SENTENCES = [
    "x",
    "A cat sits on the warm windowsill.",
    "Quarterly revenue rose by twelve percent, driven by strong demand in overseas markets.",
    "The orbit of the moon is slightly elliptical, and its distance varies. " * 4,
    "Short one.",
]


@pytest.fixture(scope="module")
def encoder() -> HFEncoder:
    return HFEncoder(None, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any]:
    """The bundled checkpoint loaded directly with transformers, in float32 on the CPU."""
    path = resolve_path(None)
    model = AutoModel.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def direct(reference: tuple[Any, Any], text: str, strategy: str) -> np.ndarray:
    """The strategy's definition computed on one unpadded text."""
    model, tokenizer = reference
    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    if strategy == "cls":
        vector = out.last_hidden_state[0, 0]
    elif strategy == "pooler":
        vector = out.pooler_output[0]
    elif strategy == "mean":
        vector = out.last_hidden_state[0].mean(dim=0)
    else:  # second-to-last
        vector = out.hidden_states[-2][0].mean(dim=0)
    return vector.numpy()


@pytest.mark.parametrize("strategy", ["mean", "cls", "second-to-last", "pooler"])
def test_strategy_matches_direct_computation(
    encoder: HFEncoder, reference: tuple[Any, Any], strategy: str
) -> None:
    expected = np.stack([direct(reference, text, strategy) for text in SENTENCES])
    batched = encoder.encode(SENTENCES, strategy, batch_tokens=100_000)
    one_by_one = np.concatenate([encoder.encode([text], strategy) for text in SENTENCES])
    tiny_batches = encoder.encode(SENTENCES, strategy, batch_tokens=40)
    assert batched.shape == (len(SENTENCES), 384) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, expected, atol=1e-5)
    np.testing.assert_allclose(one_by_one, expected, atol=1e-5)
    np.testing.assert_allclose(tiny_batches, expected, atol=1e-5)


def test_strategies_differ(encoder: HFEncoder) -> None:
    vectors = {s: encoder.encode(SENTENCES[1:3], s, normalize=True) for s in STRATEGIES}
    # The bundled model's own modules are mean pooling then normalisation.
    same = {frozenset(("mean", "sentence-transformers"))}
    for a in STRATEGIES:
        for b in STRATEGIES:
            if a < b:
                close = np.allclose(vectors[a], vectors[b], atol=1e-3)
                assert close == (frozenset((a, b)) in same), (a, b)


def test_layer_and_normalize(encoder: HFEncoder, reference: tuple[Any, Any]) -> None:
    model, tokenizer = reference
    text = SENTENCES[2]
    with torch.no_grad():
        out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
    mean_3 = encoder.encode([text], "mean", layer=3)[0]
    np.testing.assert_allclose(mean_3, out.hidden_states[3][0].mean(dim=0).numpy(), atol=1e-5)
    np.testing.assert_allclose(
        encoder.encode([text], "mean", layer=-2), encoder.encode([text], "second-to-last")
    )
    unit = encoder.encode(SENTENCES, "cls", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    with pytest.raises(PoolingError):
        encoder.encode([text], "mean", layer=7)
    with pytest.raises(PoolingError):
        encoder.encode([text], "pooler", layer=1)
    with pytest.raises(PoolingError):
        encoder.encode([text], "max")


def test_sentence_transformers_strategy(encoder: HFEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_path(None), device="cpu")
    expected = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    ours = encoder.encode(SENTENCES, "sentence-transformers")
    assert ours.shape == expected.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_empty_input(encoder: HFEncoder) -> None:
    for strategy in STRATEGIES:
        assert encoder.encode([], strategy).shape == (0, 384)
    docs, per_doc, windows = encoder.encode_long([], "mean", max_tokens=128, overlap=16)
    assert docs.shape == (0, 384) and per_doc == [] and windows == []


def test_truncation_limit(encoder: HFEncoder) -> None:
    assert encoder.max_tokens == 256
    assert transformer_folder(resolve_path(None)) == resolve_path(None)
    long_text = "word " * 600
    truncated = encoder.encode([long_text], "mean", max_tokens=64)
    ids = encoder.tokenizer(long_text, truncation=True, max_length=64)["input_ids"]
    np.testing.assert_allclose(truncated, encoder.encode_ids([ids], "mean"), atol=1e-6)
    with pytest.raises(PoolingError):
        encoder.encode([long_text], "mean", max_tokens=300)


def _save_tiny(folder: Path, *, pooler: bool) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_pooler_refused_without_trained_weights(tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / "no-pooler", pooler=False)
    encoder = HFEncoder(str(folder), device="cpu", precision="fp32")
    with pytest.raises(PoolingError, match="no trained pooler weights"):
        encoder.encode(SENTENCES, "pooler")
    assert any(key.startswith("pooler.") for key in encoder.missing_keys)
    vectors = encoder.encode(SENTENCES, "mean")
    assert vectors.shape == (len(SENTENCES), 32) and np.isfinite(vectors).all()


def test_pooler_used_with_trained_weights(tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / "with-pooler", pooler=True)
    encoder = HFEncoder(str(folder), device="cpu", precision="fp32")
    assert not encoder.missing_keys
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).pooler_output[0] for t in SENTENCES]
    ours = encoder.encode(SENTENCES, "pooler")
    np.testing.assert_allclose(ours, torch.stack(expected).numpy(), atol=1e-5)


def test_pooler_refused_for_model_without_pooler(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2, hidden_dim=64
    )
    DistilBertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = HFEncoder(str(tmp_path), device="cpu", precision="fp32")
    with pytest.raises(PoolingError, match="no pooler"):
        encoder.encode(["hello"], "pooler")
    assert encoder.encode(["hello", "hello there"], "mean").shape == (2, 32)


LONG_TEXT = " ".join(
    f"Paragraph {i}: the committee reviewed budget line {i * 7}, discussed staffing, "
    "and agreed to revisit the harbour renovation plan at the next quarterly meeting."
    for i in range(50)
)


@pytest.mark.parametrize("strategy", ["mean", "cls", "sentence-transformers"])
def test_encode_long_is_the_mean_of_windows(encoder: HFEncoder, strategy: str) -> None:
    n_tokens = len(encoder.tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"])
    assert 1300 <= n_tokens <= 1800
    docs, per_doc, windows = encoder.encode_long(
        [LONG_TEXT, "A short text."], strategy, max_tokens=256, overlap=32
    )
    assert docs.shape == (2, 384) and docs.dtype == np.float32
    assert len(windows[0]) >= 6 and len(windows[1]) == 1
    assert [len(v) for v in per_doc] == [len(w) for w in windows]
    assert all(w.tokens <= 256 for w in windows[0])
    window_ids = [w.input_ids for w in windows[0]]
    np.testing.assert_allclose(per_doc[0], encoder.encode_ids(window_ids, strategy), atol=1e-5)
    np.testing.assert_allclose(docs[0], per_doc[0].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(docs[1], per_doc[1][0], atol=1e-6)
    assert windows[0][0].start == 0 and windows[0][-1].end == len(LONG_TEXT)


def test_encode_long_token_weighting_and_normalize(encoder: HFEncoder) -> None:
    docs, per_doc, windows = encoder.encode_long(
        [LONG_TEXT], "mean", max_tokens=200, overlap=20, weighting="tokens"
    )
    weights = np.array([w.tokens - 2 for w in windows[0]], dtype=np.float64)  # [CLS], [SEP]
    assert weights[-1] < weights[0]
    expected = (per_doc[0] * weights[:, None]).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(docs[0], expected, atol=1e-6)
    assert not np.allclose(docs[0], per_doc[0].mean(axis=0), atol=1e-5)

    unit_docs, unit_windows, _ = encoder.encode_long(
        [LONG_TEXT], "mean", max_tokens=200, overlap=20, normalize=True
    )
    np.testing.assert_allclose(np.linalg.norm(unit_windows[0], axis=1), 1.0, atol=1e-5)
    mean = unit_windows[0].mean(axis=0)
    np.testing.assert_allclose(unit_docs[0], mean / np.linalg.norm(mean), atol=1e-6)
    with pytest.raises(PoolingError):
        encoder.encode_long([LONG_TEXT], "mean", max_tokens=257, overlap=20)
    with pytest.raises(PoolingError):
        encoder.encode_long([LONG_TEXT], "mean", max_tokens=200, overlap=20, weighting="max")  # type: ignore[arg-type]


def test_transformer_folder_of_a_sentence_transformers_layout(tmp_path: Path) -> None:
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_Transformer",
            "type": "sentence_transformers.models.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert transformer_folder(str(tmp_path)) == str(tmp_path / "0_Transformer")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert transformer_folder(str(plain)) == str(plain)
