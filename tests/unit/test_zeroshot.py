"""Zero-shot classification: NLI maths on tiny seeded checkpoints, embeddings on MiniLM."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from embedq.workers.encoding import Embedder
from embedq.workers.models import resolve_path
from embedq.workers.zeroshot import NLILabels, classify_embedding, classify_nli

TEXTS = [
    "The goalkeeper saved a penalty in the final minute.",
    "Stir the sauce gently and season it with pepper.",
    "x",
]
LABELS = ["sports", "cooking", "astronomy", "finance"]
TEMPLATE = "This example is {}."
STANDARD = {0: "contradiction", 1: "neutral", 2: "entailment"}
SWAPPED = {0: "entailment", 1: "neutral", 2: "contradiction"}


def _save_checkpoint(folder: Path, id2label: dict[int, str]) -> Path:
    """A one-layer BERT NLI head with fixed weights; column 2 is the negation of column 0."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    assert model.config.num_labels == len(id2label)  # implied by id2label
    with torch.no_grad():
        weight = torch.randn(len(id2label), 32, generator=torch.Generator().manual_seed(1))
        if len(id2label) == 3:
            weight[2] = -weight[0]
        model.classifier.weight.copy_(weight)
        model.classifier.bias.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nli")
    return {
        "standard": _save_checkpoint(root / "standard", STANDARD),
        "swapped": _save_checkpoint(root / "swapped", SWAPPED),
        "binary": _save_checkpoint(root / "binary", {0: "ENTAILMENT", 1: "not_entailment"}),
        "generic": _save_checkpoint(root / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}),
    }


@torch.inference_mode()
def _direct_logits(folder: Path) -> np.ndarray:
    """(texts, labels, classes) logits, one unpadded pair at a time."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    out = np.zeros((len(TEXTS), len(LABELS), model.config.num_labels))
    for i, text in enumerate(TEXTS):
        for j, label in enumerate(LABELS):
            enc = tokenizer(text, TEMPLATE.format(label), return_tensors="pt")
            out[i, j] = model(**enc).logits[0].double().numpy()
    return out


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _as_matrix(result: list[list[tuple[str, float]]]) -> np.ndarray:
    return np.array([[dict(row)[label] for label in LABELS] for row in result])


def _check_sorted(result: list[list[tuple[str, float]]]) -> None:
    for row in result:
        assert sorted(name for name, _ in row) == sorted(LABELS)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("name", "entail", "contra"), [("standard", 2, 0), ("swapped", 0, 2)])
def test_nli_maths_follows_id2label(
    checkpoints: dict[str, Path], name: str, entail: int, contra: int
) -> None:
    folder = checkpoints[name]
    logits = _direct_logits(folder)
    single = classify_nli(str(folder), TEXTS, LABELS, template=TEMPLATE, batch_size=5)
    multi = classify_nli(str(folder), TEXTS, LABELS, template=TEMPLATE, multi_label=True)
    _check_sorted(single)
    _check_sorted(multi)
    expected_single = _softmax(logits[:, :, entail], axis=1)
    expected_multi = _softmax(logits[:, :, [contra, entail]], axis=2)[:, :, 1]
    np.testing.assert_allclose(_as_matrix(single), expected_single, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_as_matrix(multi), expected_multi, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_as_matrix(single).sum(axis=1), 1.0, atol=1e-9)


def test_nli_reads_the_entailment_column_not_a_position(checkpoints: dict[str, Path]) -> None:
    # Same weights, different id2label: column 2 is minus column 0, so the rankings reverse.
    standard = classify_nli(str(checkpoints["standard"]), TEXTS, LABELS, template=TEMPLATE)
    swapped = classify_nli(str(checkpoints["swapped"]), TEXTS, LABELS, template=TEMPLATE)
    logits = _direct_logits(checkpoints["standard"])
    for i, (a, b) in enumerate(zip(standard, swapped, strict=True)):
        assert [n for n, _ in a] == [LABELS[j] for j in np.argsort(-logits[i, :, 2])]
        assert [n for n, _ in a] == [n for n, _ in reversed(b)]


def test_nli_without_contradiction_uses_all_classes(checkpoints: dict[str, Path]) -> None:
    folder = checkpoints["binary"]
    assert NLILabels.from_config({0: "ENTAILMENT", 1: "not_entailment"}) == NLILabels(0, None)
    multi = classify_nli(str(folder), TEXTS, LABELS, template=TEMPLATE, multi_label=True)
    expected = _softmax(_direct_logits(folder), axis=2)[:, :, 0]
    np.testing.assert_allclose(_as_matrix(multi), expected, atol=1e-6, rtol=0)


def test_nli_refuses_checkpoints_without_entailment(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no entailment label"):
        classify_nli(str(checkpoints["generic"]), TEXTS, LABELS)
    with pytest.raises(ValueError, match="several labels"):
        NLILabels.from_config({0: "entailment", 1: "strong_entailment"})


def test_invalid_arguments(checkpoints: dict[str, Path]) -> None:
    folder = str(checkpoints["standard"])
    with pytest.raises(ValueError, match="template"):
        classify_nli(folder, TEXTS, LABELS, template="This text is about sport.")
    with pytest.raises(ValueError, match="distinct"):
        classify_nli(folder, TEXTS, ["a", "a"])
    with pytest.raises(ValueError, match="label"):
        classify_nli(folder, TEXTS, [])
    assert classify_nli(folder, [], LABELS) == []


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(None, device="cpu", precision="fp32")


EMBED_TEXTS = {
    "sports": "The striker scored twice in the second half and the team won the league.",
    "cooking": "Simmer the onions in butter, then add garlic and a pinch of salt.",
    "astronomy": "The telescope captured light from a galaxy billions of light years away.",
}


def test_embedding_backend_picks_the_topic(embedder: Embedder) -> None:
    labels = list(EMBED_TEXTS)
    texts = list(EMBED_TEXTS.values())
    single = classify_embedding(embedder, texts, labels)
    multi = classify_embedding(embedder, texts, labels, multi_label=True)
    for expected, s_row, m_row in zip(labels, single, multi, strict=True):
        assert s_row[0][0] == expected and m_row[0][0] == expected
        assert math.isclose(sum(score for _, score in s_row), 1.0, abs_tol=1e-9)
        assert all(0.0 < score < 1.0 for _, score in m_row)
        assert m_row[0][1] > 0.5 > m_row[-1][1]


def test_embedding_backend_maths(embedder: Embedder) -> None:
    texts, labels = list(EMBED_TEXTS.values()), list(EMBED_TEXTS)
    t = embedder.encode_texts(texts).astype(np.float64)
    lab = embedder.encode_texts([f"Topic: {x}" for x in labels]).astype(np.float64)
    cos = t @ lab.T
    got = classify_embedding(embedder, texts, labels, template="Topic: {}", temperature=0.1)
    want = _softmax(cos / 0.1, axis=1)
    matrix = np.array([[dict(row)[x] for x in labels] for row in got])
    np.testing.assert_allclose(matrix, want, atol=1e-9)
    got = classify_embedding(
        embedder, texts, labels, template="Topic: {}", multi_label=True, threshold=0.3
    )
    matrix = np.array([[dict(row)[x] for x in labels] for row in got])
    np.testing.assert_allclose(matrix, 1 / (1 + np.exp(-(cos - 0.3) / 0.05)), atol=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        classify_embedding(embedder, texts, labels, temperature=0.0)
