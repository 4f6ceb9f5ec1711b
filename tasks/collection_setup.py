"""Creating a collection, or finding the one asked for again; what a collection holds.

A collection's model and windows are fixed at creation: asking for different ones later is
a Conflict rather than a silently mixed index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from embedq.storage.collections import find_collection
from embedq.storage.db import transaction
from embedq.storage.factory import FactoryError
from embedq.storage.factory import check_factory as check_bounded_factory
from embedq.storage.index_store import check_collection_name, new_index
from embedq.storage.models import Collection
from embedq.tasks.collections import collection_info
from embedq.tasks.errors import BadInput, Conflict
from embedq.tasks.reindex import check_factory as factory_usable
from embedq.tasks.runtime import Runtime
from embedq.workers.chunking import text_room, window_settings
from embedq.workers.models import ModelError, canonical_spec
from embedq.workers.shape import read_shape

DEFAULT_FACTORY = "Flat"


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    name: str
    model: str | None = None
    chunk_tokens: int | None = None
    overlap: int | None = None
    index_factory: str = DEFAULT_FACTORY

    def __post_init__(self) -> None:
        try:
            check_bounded_factory(self.index_factory)
        except FactoryError as exc:
            raise BadInput(str(exc)) from exc


def ensure_collection(rt: Runtime, spec: CollectionSpec) -> Collection:
    """The named collection, created with the spec's settings if it does not exist yet.

    BadInput for a bad name or model; Conflict when it exists with another model or other
    windows.
    """
    try:
        check_collection_name(spec.name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    with rt.sessions() as session:
        coll = find_collection(session, spec.name)
    try:
        if coll is not None:
            _check_matches(coll, spec)
            return coll
        model = canonical_spec(spec.model or rt.settings.model)
        dim, chunk_tokens, overlap = _collection_shape(rt, model, spec)
        factory_usable(dim, spec.index_factory)
    except (ModelError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    try:
        with transaction(rt.sessions) as session:
            coll = Collection(
                name=spec.name,
                model=model,
                dim=dim,
                chunk_tokens=chunk_tokens,
                overlap=overlap,
                metric="cosine",
                index_factory=spec.index_factory,
                seq=0,
            )
            session.add(coll)
    except IntegrityError:
        # Another producer created it meanwhile: use theirs if it matches the spec.
        with rt.sessions() as session:
            coll = find_collection(session, spec.name)
        if coll is None:
            raise
        _check_matches(coll, spec)
    return coll


def create_collection(rt: Runtime, spec: CollectionSpec, *, index: bool) -> tuple[Collection, bool]:
    """The collection as asked and whether it was created now (False: it already existed).

    ``index``: the spec names its index type explicitly, so an existing collection must have
    that one. Asking again with the same settings is fine; other settings are a Conflict.
    """
    with rt.sessions() as session:
        existing = find_collection(session, spec.name)
    if existing is not None:
        return _reuse(rt, spec, index), False
    if index:
        check_factory(rt, spec)
    try:
        return ensure_collection(rt, spec), True
    except IntegrityError:
        # Created by a concurrent request between our look-up and our insert.
        return _reuse(rt, spec, index), False
    except OSError as exc:
        raise BadInput(str(exc)) from exc


def _reuse(rt: Runtime, spec: CollectionSpec, index: bool) -> Collection:
    try:
        coll = ensure_collection(rt, spec)
    except BadInput as exc:
        raise Conflict(str(exc)) from exc
    if index and spec.index_factory != coll.index_factory:
        raise Conflict(
            f"collection {coll.name!r} uses index={coll.index_factory}, not "
            f"{spec.index_factory}; index into a new collection to change it"
        )
    return coll


def check_factory(rt: Runtime, spec: CollectionSpec) -> None:
    """Refuse a FAISS factory string that cannot build an index for the model's dimension."""
    try:
        dim = rt.embedder(canonical_spec(spec.model or rt.settings.model)).dim
    except (ModelError, ValueError, OSError) as exc:
        raise BadInput(str(exc)) from exc
    try:
        new_index(dim, spec.index_factory)
    except RuntimeError as exc:
        raise BadInput(
            f"index {spec.index_factory!r} is not a FAISS index factory string "
            f"usable with {dim} dimensions"
        ) from exc


def _collection_shape(rt: Runtime, model: str, spec: CollectionSpec) -> tuple[int, int, int]:
    """Dimension, window and overlap of a new collection: from the model folder's files when
    they say enough (a producer then never loads the model), else from the loaded model."""
    shape = read_shape(model)
    if shape is None:
        embedder = rt.embedder(model)
        chunker = embedder.chunker(spec.chunk_tokens, spec.overlap)
        return embedder.dim, chunker.max_tokens, chunker.overlap
    size, overlap = window_settings(shape.max_tokens, spec.chunk_tokens, spec.overlap)
    text_room(size, shape.special, overlap)
    return shape.dim, size, overlap


def _check_matches(coll: Collection, spec: CollectionSpec) -> None:
    asked = {
        "model": canonical_spec(spec.model) if spec.model else None,
        "chunk_tokens": spec.chunk_tokens,
        "overlap": spec.overlap,
    }
    for field, value in asked.items():
        if value is not None and value != getattr(coll, field):
            raise Conflict(
                f"collection {coll.name!r} uses {field}={getattr(coll, field)}, not {value}; "
                "index into a new collection to change it"
            )


def summary(rt: Runtime, coll: Collection) -> dict[str, Any]:
    """Settings and sizes: stored documents and chunks, vectors in the published index."""
    with rt.sessions() as session:
        return collection_info(session, rt.store, coll)
