"""Re-rank search candidates with a cross-encoder over each document's best window."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from embedq.storage.documents import embedding_input
from embedq.storage.models import Document
from embedq.tasks.runtime import Runtime
from embedq.workers.models import ModelError
from embedq.workers.rerank import cross_encoder, rerank_scores


class RerankError(LookupError):
    """A re-ranking model that cannot be loaded."""


def window_scores(
    rt: Runtime,
    session: Session,
    model: str,
    query: str,
    spans: Sequence[tuple[int, int, int]],
) -> list[float | None]:
    """The cross-encoder's score of (query, window text) for each (document id, start, end);
    None for a document that is gone."""
    try:
        encoder = cross_encoder(model, rt.settings.device)
    except ModelError as exc:
        raise RerankError(str(exc)) from exc
    texts = {
        r.id: embedding_input(r.title, r.text)
        for r in session.execute(
            select(Document.id, Document.title, Document.text).where(
                Document.id.in_({doc for doc, _, _ in spans})
            )
        )
    }
    kept = [i for i, (doc, _, _) in enumerate(spans) if doc in texts]
    scores = rerank_scores(
        encoder, query, [texts[spans[i][0]][spans[i][1] : spans[i][2]] for i in kept]
    )
    out: list[float | None] = [None] * len(spans)
    for i, score in zip(kept, scores.tolist(), strict=True):
        out[i] = float(score)
    return out
