"""Change a collection's FAISS index type: rebuild the index from the stored vectors.

Nothing is embedded again: the writer trains the new index (if it needs training) on a
sample of the vectors SQL holds and adds them all, under the collection's writer lock, then
publishes it as the new snapshot. Searches use the old snapshot until then.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sqlalchemy import select

from embedq.storage.index_store import new_index
from embedq.storage.models import Collection
from embedq.tasks.runtime import Runtime


class ReindexError(ValueError):
    """No such collection, or an index type that cannot be built."""


@dataclass(frozen=True, slots=True)
class Reindexed:
    collection: str
    index: str
    previous: str
    vectors: int
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_factory(dim: int, factory: str) -> None:
    """Refuse a FAISS factory string that cannot build an index of ``dim`` dimensions."""
    try:
        new_index(dim, factory)
    except RuntimeError as exc:
        raise ReindexError(
            f"index {factory!r} is not a FAISS index factory string usable with {dim} dimensions"
        ) from exc


def reindex(rt: Runtime, name: str, factory: str) -> Reindexed:
    """Rebuild the collection's index as ``factory`` from its stored vectors."""
    with rt.sessions.begin() as session:
        coll = session.scalars(select(Collection).where(Collection.name == name)).first()
        if coll is None:
            raise ReindexError(f"no collection named {name!r}")
        check_factory(coll.dim, factory)
        previous = coll.index_factory
        coll.index_factory = factory
    began = time.perf_counter()
    try:
        meta = rt.writer.rebuild(name)
    except Exception:
        with rt.sessions.begin() as session:
            coll = session.scalars(select(Collection).where(Collection.name == name)).one()
            coll.index_factory = previous
        raise
    return Reindexed(
        name,
        factory,
        previous,
        meta.count if meta is not None else 0,
        round(time.perf_counter() - began, 3),
    )
