"""Request and response bodies of search, documents and re-indexing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from embedq.tasks.search import DEFAULT_MODE, MAX_CANDIDATES, MAX_K

MAX_QUERY_CHARS = 10_000
MAX_QUERIES = 256

FILTER_FIELD = Field(
    None,
    description=(
        "Conditions on the documents' meta, all of which must hold: "
        '{"topic": "bees"}, {"lang": {"in": ["en", "de"]}}, {"year": {"gte": 2010, "lt": 2020}}, '
        '{"topic": {"ne": "x"}}, dotted keys for nested objects ("author.name"). Applied '
        "before ranking: k hits come back whenever k documents match."
    ),
    examples=[{"year": {"gte": 2010}}],
)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("query is blank")
    return value


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    query: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS)
    queries: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_QUERIES,
        description=f"several queries at once (at most {MAX_QUERIES}); the answer has results",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="documents to return")
    mode: Literal["dense", "sparse", "hybrid"] = Field(
        DEFAULT_MODE, description="dense vectors, BM25 over the windows, or both fused"
    )
    filter: dict[str, Any] | None = FILTER_FIELD
    fusion: Literal["mix", "rrf"] = Field(
        "mix",
        description="hybrid: mix = alpha * dense + (1 - alpha) * sparse over min-max "
        "normalised scores; rrf = reciprocal rank fusion",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the dense side in mix")
    rrf_k: int = Field(60, ge=1, le=10_000, description="rank constant of rrf")
    candidates: int = Field(
        100, ge=1, le=MAX_CANDIDATES, description="hybrid: documents taken from each side"
    )
    nprobe: int | None = Field(
        None, ge=1, le=65_536, description="IVF lists read (default: a quarter, 8..256)"
    )
    ef_search: int | None = Field(
        None, ge=1, le=65_536, description="HNSW candidates kept (default 128)"
    )
    meta: bool = Field(True, description="include each document's meta in its hit")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        return None if value is None else _not_blank(value)

    @field_validator("queries")
    @classmethod
    def _queries(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for number, text in enumerate(value):
            if not 1 <= len(text) <= MAX_QUERY_CHARS:
                raise ValueError(f"queries[{number}]: 1 to {MAX_QUERY_CHARS} characters")
            if not text.strip():
                raise ValueError(f"queries[{number}] is blank")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give either query or queries")
        return self


class ChunkSpan(BaseModel):
    start: int = Field(description="character offset where the best window starts")
    end: int = Field(description="character offset where it ends")
    window: int = Field(description="window number within the document")
    text: str = Field(description="the window's text: the embedded string [start:end]")


class SearchHit(BaseModel):
    id: str
    score: float
    title: str | None
    meta: dict[str, Any] | None = None
    chunk: ChunkSpan


class SearchResponse(BaseModel):
    hits: list[SearchHit]


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse] = Field(description="one entry per query, in order")


class DocumentView(BaseModel):
    id: str
    title: str | None
    text: str
    meta: dict[str, Any] | None
    chunks: int = Field(description="windows stored for it")
    indexed: bool = Field(description="its current text is embedded (not waiting for a job)")


class ReindexRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    index: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_,.]+$",
        description="FAISS index factory string",
        examples=["IVF64,Flat", "HNSW32,Flat"],
    )


class ReindexResult(BaseModel):
    collection: str
    index: str
    previous: str
    vectors: int
    seconds: float
