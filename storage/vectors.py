"""Document vectors of a collection, derived from its stored chunk vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from embedq.storage.models import Chunk, Document

PAGE = 20_000


def document_vectors(
    session: Session,
    collection_id: int,
    dim: int,
    *,
    limit: int | None = None,
    weighting: str = "mean",
) -> tuple[list[str], np.ndarray]:
    """(external ids, L2-normalised vectors): each document is the mean of its windows.

    ``weighting="tokens"`` weighs each window by its token count. ``limit`` takes an even
    sample of that many documents (by internal id), for exports and plots of huge collections.
    """
    doc_ids = _document_ids(session, collection_id, limit)
    ids: list[str] = []
    out = np.zeros((len(doc_ids), dim), dtype=np.float32)
    for start in range(0, len(doc_ids), PAGE):
        page = doc_ids[start : start + PAGE]
        rows = session.execute(
            select(Chunk.document_id, Chunk.tokens, Chunk.vector, Document.external_id)
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.document_id.in_(page))
            .order_by(Chunk.document_id, Chunk.window)
        ).all()
        position = {d: start + i for i, d in enumerate(page)}
        names: dict[int, str] = {}
        for row in rows:
            weight = float(row.tokens) if weighting == "tokens" else 1.0
            out[position[row.document_id]] += weight * np.frombuffer(row.vector, np.float32)
            names[row.document_id] = row.external_id
        ids.extend(names.get(d, "") for d in page)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    keep = norms[:, 0] > 0
    out = out[keep] / norms[keep]
    return [i for i, k in zip(ids, keep, strict=True) if k], out


def _document_ids(session: Session, collection_id: int, limit: int | None) -> Sequence[int]:
    query = select(Document.id).where(
        Document.collection_id == collection_id, Document.indexed_hash.is_not(None)
    )
    ids = list(session.scalars(query.order_by(Document.id)))
    if limit is not None and len(ids) > limit:
        step = len(ids) / limit
        ids = [ids[int(i * step)] for i in range(limit)]
    return ids
