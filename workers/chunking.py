"""Cut documents into token windows on the model's own fast tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embedq.workers.models import ModelError


@dataclass(frozen=True, slots=True)
class Window:
    """One model input: token ids with special tokens, and the characters it covers."""

    number: int
    start: int
    end: int
    input_ids: list[int]

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


def window_spans(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges [a, b) of windows of ``size`` content tokens overlapping by ``overlap``."""
    if size <= 0:
        raise ValueError("window size must be positive")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and {size - 1}, got {overlap}")
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = size - overlap
    spans = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def special_affixes(backend: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single sequence."""
    probe = "hello world"
    plain = backend.encode(probe, add_special_tokens=False).ids
    full = backend.encode(probe, add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def text_room(max_tokens: int, special: int, overlap: int) -> int:
    """Text tokens per window of ``max_tokens`` with ``special`` tokens around it; a
    ValueError when the window or the overlap cannot work."""
    size = max_tokens - special
    if size <= 0:
        raise ValueError(f"window of {max_tokens} tokens leaves no room for text")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and {size - 1}, got {overlap}")
    return size


def window_settings(limit: int, chunk_tokens: int | None, overlap: int | None) -> tuple[int, int]:
    """Window size and overlap asked for, defaulting to the model's ``limit`` and an eighth
    of the window; a window above the limit is an error."""
    size = chunk_tokens or limit
    if size > limit:
        raise ModelError(f"--chunk-tokens {size} exceeds the model's limit of {limit} tokens")
    return size, size // 8 if overlap is None else overlap


class Chunker:
    """Windows of at most ``max_tokens`` tokens, special tokens included."""

    def __init__(self, tokenizer: Any, max_tokens: int, overlap: int) -> None:
        """``tokenizer``: a ``tokenizers.Tokenizer`` or a transformers fast tokenizer."""
        source = getattr(tokenizer, "backend_tokenizer", tokenizer)
        backend = source.__class__.from_str(source.to_str())
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._prefix, self._suffix = special_affixes(backend)
        self.special = len(self._prefix) + len(self._suffix)
        self.max_tokens = max_tokens
        self.size = text_room(max_tokens, self.special, overlap)
        self.overlap = overlap

    def split(self, text: str) -> list[Window]:
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str]) -> list[list[Window]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._windows(enc.ids, enc) for enc in encodings]

    def heads(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Each text's token ids truncated to ``limit`` tokens, special tokens included (the
        tokenizer's own truncation of a single sequence)."""
        room = max(limit - self.special, 0)
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._prefix + enc.ids[:room] + self._suffix for enc in encodings]

    def _windows(self, ids: list[int], encoding: Any) -> list[Window]:
        if not ids:
            return [Window(0, 0, 0, self._prefix + self._suffix)]
        out = []
        for number, (a, b) in enumerate(window_spans(len(ids), self.size, self.overlap)):
            window_ids = self._prefix + ids[a:b] + self._suffix
            out.append(Window(number, *_characters(encoding, a, b), window_ids))
        return out


def _characters(encoding: Any, a: int, b: int) -> tuple[int, int]:
    """The characters tokens [a, b) cover. Two lookups, not the whole offsets list (which
    costs a tuple a token: over a tenth of the tokeniser's own time)."""
    first, last = encoding.token_to_chars(a), encoding.token_to_chars(b - 1)
    if first is None or last is None:  # a token of no characters: read the list after all
        offsets = encoding.offsets
        return offsets[a][0], offsets[b - 1][1]
    return first[0], last[1]
