"""The chunker: window sizes, overlap, offsets, special tokens, non-Latin text."""

from __future__ import annotations

import itertools

import pytest

from embedq.workers.chunking import Chunker, window_spans
from embedq.workers.encoding import token_budget_batches


@pytest.mark.parametrize(
    ("n", "size", "overlap", "expected"),
    [
        (0, 10, 2, [(0, 0)]),
        (7, 10, 2, [(0, 7)]),
        (10, 10, 2, [(0, 10)]),
        (11, 10, 2, [(0, 10), (8, 11)]),
        (26, 10, 2, [(0, 10), (8, 18), (16, 26)]),
        (25, 10, 0, [(0, 10), (10, 20), (20, 25)]),
    ],
)
def test_window_spans(n: int, size: int, overlap: int, expected: list[tuple[int, int]]) -> None:
    assert window_spans(n, size, overlap) == expected


def test_window_spans_cover_every_token_with_the_overlap() -> None:
    for n in range(1, 300, 7):
        spans = window_spans(n, 32, 5)
        assert spans[0][0] == 0 and spans[-1][1] == n
        for (a0, b0), (a1, _b1) in itertools.pairwise(spans):
            assert b0 - a0 == 32
            assert b0 - a1 == 5


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_window_spans_refuse_bad_settings(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        window_spans(100, size, overlap)


def test_token_budget_batches_sort_and_respect_the_budget() -> None:
    lengths = [5, 100, 20, 100, 3, 50, 64]
    groups = list(token_budget_batches(lengths, budget=200))
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) * max(lengths[i] for i in group) <= 200 or len(group) == 1
    firsts = [lengths[g[0]] for g in groups]
    assert firsts == sorted(firsts, reverse=True)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from embedq.workers.models import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path(None))


def _words(n: int) -> str:
    vocab = ["river", "bank", "money", "stone", "bridge", "light", "orbit", "quiet", "amber"]
    return " ".join(vocab[i % len(vocab)] + str(i % 13) for i in range(n))


def test_windows_never_exceed_the_limit_and_carry_special_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, max_tokens=64, overlap=8)
    windows = chunker.split(_words(400))
    assert len(windows) > 3
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for w in windows:
        assert w.tokens <= 64
        assert w.input_ids[0] == cls and w.input_ids[-1] == sep
    assert all(w.tokens == 64 for w in windows[:-1])
    assert [w.number for w in windows] == list(range(len(windows)))


def test_window_offsets_slice_back_to_the_window_text(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "  Leading space. " + _words(300) + " The END of it."
    chunker = Chunker(tokenizer, max_tokens=48, overlap=6)
    for w in chunker.split(text):
        sliced = text[w.start : w.end]
        # A window may begin inside a word: its first piece is then a "##" continuation.
        assert tokenizer.decode(w.input_ids[1:-1]).removeprefix("##") == tokenizer.decode(
            tokenizer(sliced, add_special_tokens=False)["input_ids"]
        )
        assert sliced == sliced.strip()


def test_overlapping_windows_share_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, max_tokens=40, overlap=10)
    first, second = chunker.split(_words(200))[:2]
    assert first.input_ids[-11:-1] == second.input_ids[1:11]
    assert second.start < first.end


@pytest.mark.parametrize(
    "text",
    [
        "날씨 오늘은 오후부터 춥고 비가 올 것 같다. " * 40,
        "Emoji 😀🎉 mixed with text 👩‍👩‍👧 and accents é ü ñ. " * 40,
        "日本語の文章とEnglish words mixed together. " * 40,
    ],
)
def test_non_latin_offsets_are_valid_character_positions(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, max_tokens=32, overlap=4)
    windows = chunker.split(text)
    assert len(windows) > 1
    for w in windows:
        assert 0 <= w.start < w.end <= len(text)
        assert text[w.start : w.end].strip()
        assert w.tokens <= 32
    assert windows[-1].end == len(text.rstrip())


def test_short_and_empty_texts(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, max_tokens=256, overlap=32)
    (only,) = chunker.split("A short sentence.")
    assert (only.start, only.end) == (0, len("A short sentence."))
    (empty,) = chunker.split("")
    assert empty.input_ids == [tokenizer.cls_token_id, tokenizer.sep_token_id]


def test_chunker_refuses_an_overlap_as_large_as_the_window(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        Chunker(tokenizer, max_tokens=16, overlap=14)
