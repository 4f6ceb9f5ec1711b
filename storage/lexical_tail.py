"""The windows above a collection's lexical watermark, scored by BM25 at query time.

The writer commits the lexical index at every catch-up, so rows written since then are not
in it yet; a search reads them from SQL (each page once per process: the tail is kept and
extended, as the dense side keeps the rows above its snapshot) and scores them with the
index's own statistics: the number of windows and each term's document frequency come from
the index plus the tail, the average window length from the tail (windows are cut to one
size, so it stands in for the index's). Scores are therefore on the index's scale and the two
lists merge by score.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

K1 = 1.2
B = 0.75
MAX_WINDOWS = 50_000
"""Windows one collection's tail may hold in memory; beyond it the oldest are not scored
(a writer this far behind is an operational fault, reported in the writer's lag metric)."""


@dataclass(slots=True)
class TailWindow:
    chunk: int
    doc: int
    terms: Counter[str]
    length: int


@dataclass(slots=True)
class Tail:
    """What a process holds of one collection's tail: windows in ``(floor, upto]``."""

    key: str
    floor: int
    upto: int
    windows: list[TailWindow] = field(default_factory=list)
    df: Counter[str] = field(default_factory=Counter)
    """Windows holding each term: counted once as windows join, not at every query."""

    def __post_init__(self) -> None:
        if self.windows and not self.df:
            for w in self.windows:
                self.df.update(w.terms.keys())

    def doc_freq(self, term: str) -> int:
        return self.df[term]


class TailCache:
    """Per-collection tails of one process, extended as the collection grows and started
    over when the watermark moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tails: dict[str, Tail] = {}

    def get(
        self,
        collection: str,
        key: str,
        floor: int,
        upto: int,
        read: Callable[[int, int], Iterable[tuple[int, int, str]]],
        analyse: Callable[[str], list[str]],
    ) -> Tail:
        """The tail in ``(floor, upto]``; ``read(after, upto)`` gives (chunk, doc, text) of
        the sequence numbers in ``(after, upto]`` and is asked only for what is not held."""
        with self._lock:
            tail = self._tails.get(collection)
            if tail is None or tail.key != key or tail.floor != floor or tail.upto > upto:
                tail = Tail(key, floor, floor)
            if tail.upto < upto:
                # Sequence numbers count windows: the newest MAX_WINDOWS are all that is read.
                after = max(tail.upto, upto - MAX_WINDOWS)
                fresh = [
                    TailWindow(chunk, doc, Counter(words), len(words))
                    for chunk, doc, text in read(after, upto)
                    for words in (analyse(text),)
                ]
                if len(tail.windows) + len(fresh) <= MAX_WINDOWS:
                    df = tail.df.copy()
                    for w in fresh:
                        df.update(w.terms.keys())
                    tail = Tail(key, floor, upto, tail.windows + fresh, df)
                else:  # the oldest leave: count again
                    tail = Tail(key, floor, upto, (tail.windows + fresh)[-MAX_WINDOWS:])
            self._tails[collection] = tail
            return tail

    def forget(self, collection: str) -> None:
        with self._lock:
            self._tails.pop(collection, None)


def score(
    tail: Tail,
    terms: Sequence[str],
    indexed: int,
    indexed_freq: Callable[[str], int],
    docs: set[int] | None = None,
) -> tuple[list[int], list[float]]:
    """BM25 of every tail window holding a query term (within ``docs`` when given): chunk
    ids and scores, best first. ``indexed``/``indexed_freq``: the index's window count and
    document frequencies, so that scores match the index's."""
    if not tail.windows or not terms:
        return [], []
    total = indexed + len(tail.windows)
    average = sum(w.length for w in tail.windows) / len(tail.windows) or 1.0
    idf = {}
    for term in terms:
        df = indexed_freq(term) + tail.doc_freq(term)
        idf[term] = math.log(1 + (total - df + 0.5) / (df + 0.5))
    found: list[tuple[float, int]] = []
    for w in tail.windows:
        if docs is not None and w.doc not in docs:
            continue
        norm = K1 * (1 - B + B * w.length / average)
        s = sum(idf[t] * w.terms[t] * (K1 + 1) / (w.terms[t] + norm) for t in terms if t in w.terms)
        if s > 0:
            found.append((s, w.chunk))
    found.sort(key=lambda p: (-p[0], p[1]))
    return [c for _, c in found], [s for s, _ in found]
