"""The FAISS index types a collection may use: a small grammar of factory strings with bounded
numbers, checked before anything is built.

FAISS's own factory takes any number it can parse: ``IVF10000000,Flat`` asks for ten million
centroids (gigabytes before the first vector), ``HNSW100000`` for graphs of 0.8 MB a vector.
A collection's index type comes from a request, so only these forms are accepted::

    factory   := [transform ","] index
    transform := "PCA" D | "OPQ" M ["_" D]
    index     := "Flat" | "HNSW" M [",Flat" | ",SQ8"] | encoding
               | "IVF" LISTS ["_HNSW" M] "," ("Flat" | encoding)
    encoding  := "PQ" M ["x" BITS] | "SQ4" | "SQ8" | "SQfp16"

with HNSW's M in 4..64, IVF's LISTS in 1..65,536, PQ's M in 1..256 and BITS in 4..12, and D
(output dimensions of a transform) in 1..4,096. Whether a string also fits the model's
dimension (PQ's M must divide it) is FAISS's to say when the index is built.
"""

from __future__ import annotations

import re

__all__ = ["BOUNDS", "FactoryError", "check_factory"]

BOUNDS: dict[str, tuple[int, int]] = {
    "hnsw_m": (4, 64),
    "ivf_lists": (1, 65_536),
    "pq_m": (1, 256),
    "pq_bits": (4, 12),
    "dims": (1, 4096),
}
"""Inclusive ranges of every number the grammar accepts."""

_NUM = r"(\d{1,9})"
_ENCODING = rf"(?:PQ{_NUM}(?:x{_NUM})?|SQ4|SQ8|SQfp16)"
_FORMS = [
    re.compile(rf"^(?:(?:PCA{_NUM}|OPQ{_NUM}(?:_{_NUM})?),)?{body}$")
    for body in (
        "Flat",
        rf"HNSW{_NUM}(?:,Flat|,SQ8)?",
        _ENCODING,
        rf"IVF{_NUM}(?:_HNSW{_NUM})?,(?:Flat|{_ENCODING})",
    )
]
_NUMBERS = re.compile(r"(PCA|OPQ|_|HNSW|IVF|PQ|x)(\d+)")
_KIND = {"PCA": "dims", "OPQ": "pq_m", "_": "dims", "HNSW": "hnsw_m", "IVF": "ivf_lists"}
_KIND |= {"PQ": "pq_m", "x": "pq_bits"}
_NAMES = {
    "hnsw_m": "HNSW's M (graph links per vector)",
    "ivf_lists": "IVF's list count",
    "pq_m": "PQ's or OPQ's M (sub-quantizers)",
    "pq_bits": "PQ's bits per code",
    "dims": "a transform's output dimensions",
}


class FactoryError(ValueError):
    """A factory string outside the accepted grammar or its bounds; the message says why."""


def check_factory(factory: str) -> str:
    """Return ``factory`` if the grammar accepts it; raise :class:`FactoryError` otherwise."""
    if not any(form.match(factory) for form in _FORMS):
        raise FactoryError(
            f"index {factory!r} is not an accepted index type: use Flat, HNSW<M>, "
            "IVF<lists>,Flat, IVF<lists>,PQ<M>, IVF<lists>,SQ8, PQ<M> or SQ8 "
            "(optionally after PCA<d> or OPQ<M>; see docs/security.md)"
        )
    for prefix, digits in _NUMBERS.findall(factory):
        kind = _KIND[prefix]
        low, high = BOUNDS[kind]
        value = int(digits)
        if not low <= value <= high:
            raise FactoryError(
                f"index {factory!r}: {_NAMES[kind]} is {value}; it must be in {low}..{high}"
            )
    return factory
