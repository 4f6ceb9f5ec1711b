"""Contextual word vectors on the bundled model: words, offsets, sub-words, senses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from embedq.workers.models import resolve_path
from embedq.workers.pooling import HFEncoder
from embedq.workers.words import Word, WordsError, analyse, repeated_words, word_vectors


@pytest.fixture(scope="module")
def encoder() -> HFEncoder:
    return HFEncoder(None, device="cpu", precision="fp32")


def test_words_and_offsets(encoder: HFEncoder) -> None:
    sentence = "Tokenization of antidisestablishmentarianism, naïvely!  Straße café"
    words, vectors = word_vectors(encoder, sentence)
    assert [w.word for w in words] == [
        "Tokenization",
        "of",
        "antidisestablishmentarianism",
        ",",
        "naïvely",
        "!",
        "Straße",
        "café",
    ]
    assert all(sentence[w.start : w.end] == w.word for w in words)
    assert vectors.shape == (len(words), 384) and vectors.dtype == np.float32


def test_sub_word_pieces_merge_into_one_word(encoder: HFEncoder) -> None:
    sentence = "They opposed antidisestablishmentarianism loudly."
    word = "antidisestablishmentarianism"
    pieces = encoder.tokenizer.tokenize(word)
    assert len(pieces) > 3
    words, vectors = word_vectors(encoder, sentence)
    index = [w.word for w in words].index(word)
    assert words[index] == Word(word, sentence.index(word), sentence.index(word) + len(word))

    model = AutoModel.from_pretrained(resolve_path(None)).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    enc = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state[0]
    positions = [i for i, w in enumerate(enc.word_ids(0)) if w == index]
    assert len(positions) == len(pieces)
    np.testing.assert_allclose(vectors[index], hidden[positions].mean(dim=0).numpy(), atol=1e-5)

    # A (model, tokenizer) pair gives the same vectors as the encoder.
    words_pair, vectors_pair = word_vectors((model, tokenizer), sentence)
    assert words_pair == words
    np.testing.assert_allclose(vectors_pair, vectors, atol=1e-5)


def test_layer_changes_the_vectors(encoder: HFEncoder) -> None:
    sentence = "The spring rains came early this year."
    _, last = word_vectors(encoder, sentence)
    _, explicit_last = word_vectors(encoder, sentence, layer=6)
    _, third = word_vectors(encoder, sentence, layer=3)
    _, embeddings = word_vectors(encoder, sentence, layer=0)
    np.testing.assert_allclose(last, explicit_last)
    assert not np.allclose(last, third, atol=1e-3)
    assert not np.allclose(third, embeddings, atol=1e-3)
    with pytest.raises(WordsError):
        word_vectors(encoder, sentence, layer=7)


# (sentence, word, the two occurrences of one sense, the occurrence of the other sense)
SENSES = [
    (
        "The bank approved my loan, and the bank also holds my savings, "
        "but the muddy bank of the river flooded.",
        "bank",
        (0, 1),
        2,
    ),
    (
        "We sat on the grassy bank of the river, and later I paid the bank "
        "the fee the bank charges for loans.",
        "bank",
        (1, 2),
        0,
    ),
    (
        "The mattress spring snapped, but the flowers bloom every spring "
        "and the coiled metal spring in the pen bent.",
        "spring",
        (0, 2),
        1,
    ),
    (
        "The pitcher of lemonade was cold, the baseball pitcher threw a fastball, "
        "and the pitcher on the mound struck him out.",
        "pitcher",
        (1, 2),
        0,
    ),
]


@pytest.mark.parametrize(("sentence", "word", "same", "other"), SENSES)
def test_same_sense_is_closer(
    encoder: HFEncoder, sentence: str, word: str, same: tuple[int, int], other: int
) -> None:
    words, vectors = word_vectors(encoder, sentence)
    found = {r["word"]: r for r in repeated_words(words, vectors)}
    entry = found[word]
    assert len(entry["occurrences"]) == 3
    assert all(words[i].word.casefold() == word for i in entry["occurrences"])
    cosine = np.array(entry["cosine"])
    np.testing.assert_allclose(cosine, cosine.T, atol=1e-9)
    np.testing.assert_allclose(np.diag(cosine), 1.0, atol=1e-6)
    a, b = same
    assert cosine[a, b] > cosine[a, other]
    assert cosine[a, b] > cosine[b, other]


def test_repeated_words_rules() -> None:
    words = [Word("The", 0, 3), Word("cat", 4, 7), Word(",", 7, 8), Word("the", 9, 12)]
    words += [Word(",", 12, 13), Word("CAT", 14, 17), Word("dog", 18, 21), Word("cat", 22, 25)]
    vectors = np.eye(len(words), 4, dtype=np.float32) + 0.5
    out = repeated_words(words, vectors)
    assert [(r["word"], r["occurrences"]) for r in out] == [("the", [0, 3]), ("cat", [1, 5, 7])]
    assert np.array(out[1]["cosine"]).shape == (3, 3)


def test_analyse_output_shape(encoder: HFEncoder) -> None:
    result: dict[str, Any] = analyse(encoder, "The Bank and the bank, banks.", layer=-2)
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {"words", "repeated"}
    assert result["words"][1] == {"word": "Bank", "start": 4, "end": 8}
    assert [r["word"] for r in result["repeated"]] == ["the", "bank"]
    bank = result["repeated"][1]
    assert bank["occurrences"] == [1, 4]
    assert len(bank["cosine"]) == 2 and len(bank["cosine"][0]) == 2
    assert analyse(encoder, "No repeats here.")["repeated"] == []
