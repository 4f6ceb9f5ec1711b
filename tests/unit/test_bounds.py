"""The grammar of index types, literal zero-shot templates and the k range of ``choose_k``."""

from __future__ import annotations

import numpy as np
import pytest

from embedq.storage.factory import FactoryError, check_factory
from embedq.storage.index_store import new_index
from embedq.tasks.collection_setup import CollectionSpec
from embedq.tasks.errors import BadInput
from embedq.workers.clustering import check_k_range, choose_k
from embedq.workers.templates import check_template, fill

ACCEPTED = [
    "Flat",
    "HNSW32",
    "HNSW8,Flat",
    "HNSW16,SQ8",
    "IVF4,Flat",
    "IVF64,PQ4",
    "IVF1024,PQ48",
    "IVF256,PQ16x8",
    "IVF16_HNSW32,Flat",
    "IVF65536,Flat",
    "OPQ16_64,IVF256,PQ16",
    "PCA128,IVF16,SQ8",
    "PQ8",
    "SQ8",
    "SQfp16",
]


@pytest.mark.parametrize("factory", ACCEPTED)
def test_every_accepted_form_builds_a_faiss_index(factory: str) -> None:
    assert check_factory(factory) == factory
    index = new_index(384, factory)
    assert index.d == 384


@pytest.mark.parametrize(
    "factory",
    [
        *["IVF10000000,Flat", "HNSW100000", "HNSW2", "IVF0,Flat", "PQ8x16", "PCA8192,Flat"],
        *["IVF4", "IDMap,Flat", "Flat,Flat", "HNSW32,PQ8", "LSH", "IVF4,Flat ", "{}"],
    ],
)
def test_unbounded_or_unknown_forms_are_refused(factory: str) -> None:
    with pytest.raises(FactoryError):
        check_factory(factory)
    with pytest.raises(BadInput):
        CollectionSpec("c", index_factory=factory)


def test_a_template_is_filled_literally() -> None:
    assert fill("About {}.", "{0.__class__}") == "About {0.__class__}."
    assert fill("{} first", "x") == "x first"


@pytest.mark.parametrize(
    "template", ["{{}}{:>20000000}", "{0.__class__}{}", "no slot", "{} and {}", "{}" + "x" * 499]
)
def test_other_braces_and_long_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        check_template(template)


def test_the_k_range_is_capped() -> None:
    assert check_k_range(2, 33) == (2, 33)
    for low, high in [(2, 9999), (2, 34), (1, 3), (5, 4), (250, 257)]:
        with pytest.raises(ValueError):
            check_k_range(low, high)
    vectors = np.eye(8, 300, dtype=np.float32)
    with pytest.raises(ValueError, match="at most 32"):
        choose_k(vectors, 2, 100)
