"""Contextual word vectors, and how alike the same word is in its different places.

A word is what the model's fast tokenizer pre-tokenises as one word (for BERT: a run of
letters or digits, or one punctuation mark). Its vector is the mean of the hidden states of
its sub-word pieces at one layer; special tokens are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from embedq.workers.pooling import HFEncoder, cached_encoder

Source = HFEncoder | tuple[Any, Any]


class WordsError(ValueError):
    """A sentence, tokenizer or layer the word analysis cannot handle."""


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a sentence: ``sentence[start:end] == word``."""

    word: str
    start: int
    end: int


def _model_and_tokenizer(source: Source) -> tuple[Any, Any]:
    if isinstance(source, HFEncoder):
        return source.model, source.tokenizer
    model, tokenizer = source
    return model, tokenizer


def _hidden_layer(model: Any, tokenizer: Any, sentence: str, layer: int) -> tuple[Any, Any]:
    """The tokenizer's encoding of ``sentence`` and the hidden states at ``layer`` (float32)."""
    if not getattr(tokenizer, "is_fast", False):
        raise WordsError("word vectors need a fast tokenizer (word ids and offsets)")
    enc = tokenizer(sentence, return_offsets_mapping=True, return_tensors="pt")
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    if enc["input_ids"].shape[1] > limit:
        raise WordsError(
            f"sentence has {enc['input_ids'].shape[1]} tokens; the model takes at most {limit}"
        )
    device = next(model.parameters()).device
    features = {k: v.to(device) for k, v in enc.items() if k != "offset_mapping"}
    with torch.inference_mode():
        states = model(**features, output_hidden_states=True).hidden_states
    if not -len(states) <= layer < len(states):
        raise WordsError(f"layer {layer} is out of range for {len(states)} hidden states")
    return enc, states[layer][0].to(torch.float32).cpu()


def word_vectors(
    source: Source, sentence: str, *, layer: int = -1
) -> tuple[list[Word], np.ndarray]:
    """The words of ``sentence`` and one float32 vector per word.

    ``source`` is an :class:`~embedq.workers.pooling.HFEncoder` or a ``(model, tokenizer)``
    pair with a fast tokenizer. ``layer`` indexes ``hidden_states`` (0 = embeddings, -1 = last
    layer). A word split into several pieces gets the mean of its pieces' vectors.
    """
    model, tokenizer = _model_and_tokenizer(source)
    enc, hidden = _hidden_layer(model, tokenizer, sentence, layer)
    offsets = enc["offset_mapping"][0].tolist()
    pieces: dict[int, list[int]] = {}
    for position, word_id in enumerate(enc.word_ids(0)):
        if word_id is not None:
            pieces.setdefault(word_id, []).append(position)
    words: list[Word] = []
    vectors = np.empty((len(pieces), hidden.shape[1]), dtype=np.float32)
    for row, word_id in enumerate(sorted(pieces)):
        positions = pieces[word_id]
        start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
        words.append(Word(sentence[start:end], start, end))
        vectors[row] = hidden[positions].mean(dim=0).numpy()
    return words, vectors


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity between every pair of rows."""
    rows = np.asarray(vectors, dtype=np.float64)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return np.asarray(unit @ unit.T)


def repeated_words(words: list[Word], vectors: np.ndarray) -> list[dict[str, Any]]:
    """Each alphabetic word (case-folded) found at least twice, with the cosine similarity
    matrix between its occurrences; in order of first occurrence."""
    places: dict[str, list[int]] = {}
    for index, word in enumerate(words):
        if word.word.isalpha():
            places.setdefault(word.word.casefold(), []).append(index)
    out = []
    for key, indexes in places.items():
        if len(indexes) < 2:
            continue
        cosine = cosine_matrix(vectors[indexes])
        out.append({"word": key, "occurrences": indexes, "cosine": cosine.tolist()})
    return out


def analyse(source: str | HFEncoder | None, sentence: str, layer: int = -1) -> dict[str, Any]:
    """The ``embedq words`` result: the words with their spans, and the repeated ones.

    ``source`` is a model spec (see :func:`embedq.workers.models.resolve_path`) or an encoder.
    """
    encoder = source if isinstance(source, HFEncoder) else cached_encoder(source)
    words, vectors = word_vectors(encoder, sentence, layer=layer)
    return {
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in words],
        "repeated": repeated_words(words, vectors),
    }
