"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from embedq.api.model_policy import check_model
from embedq.storage.factory import check_factory
from embedq.storage.index_store import check_collection_name
from embedq.tasks.uploads import MAX_DOCUMENTS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Collection names: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""

CollectionName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=NAME_PATTERN, examples=["articles"]),
]

DOCUMENTS_FIELD = Field(
    description=(
        f"Up to {MAX_DOCUMENTS} records, each {{id, text, title?, meta?}}. Each record is "
        "checked like a JSONL line: a bad one becomes an error of the job (with its 1-based "
        "position as the line), not a rejection of the whole request."
    ),
    examples=[[{"id": "doc-1", "text": "Honeybees dance to show where flowers are."}]],
)


class Problem(BaseModel):
    detail: str


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: CollectionName
    model: str | None = Field(
        None, min_length=1, max_length=512, description="model spec; default: the bundled model"
    )
    chunk_tokens: int | None = Field(None, ge=1, le=512, description="tokens per window")
    overlap: int | None = Field(None, ge=0, le=511, description="tokens shared by windows")
    metric: Literal["cosine"] = "cosine"
    index: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_,.]+$",
        description='FAISS index factory string (default "Flat")',
        examples=["Flat", "HNSW32,Flat"],
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_collection_name(value)

    @field_validator("model")
    @classmethod
    def _allowed_model(cls, value: str | None) -> str | None:
        return check_model(value)

    @field_validator("index")
    @classmethod
    def _bounded_index(cls, value: str | None) -> str | None:
        return None if value is None else check_factory(value)


class CollectionView(BaseModel):
    name: str
    model: str
    dim: int
    chunk_tokens: int
    overlap: int
    metric: str
    index: str
    documents: int = Field(description="documents stored")
    chunks: int = Field(description="chunk rows stored")
    indexed: int = Field(description="vectors in the published index snapshot")


class DocumentsSubmit(BaseModel):
    documents: list[Any] = DOCUMENTS_FIELD
    callback_url: str | None = Field(
        None, max_length=2048, description="POST the job's final JSON here once it finishes"
    )


class JobAccepted(BaseModel):
    job_id: str


class JobRequest(BaseModel):
    """A job of any kind; the fields besides ``kind`` depend on it."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(examples=["index"])


class IndexJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["index"]
    collection: CollectionName
    documents: list[Any] = DOCUMENTS_FIELD


class Progress(BaseModel):
    total: int
    done: int
    failed: int


class JobView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    collection: str | None
    progress: Progress
    unchanged: int
    rejected: int
    params: dict[str, Any] | None
    error: str | None
    result: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class JobErrorItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    line: int | None = Field(description="line (or 1-based position) of the rejected record")
    id: str | None = None
    reason: str
    source: str | None = None


class JobErrors(BaseModel):
    errors: list[JobErrorItem]
    total: int


class JobResult(BaseModel):
    status: str
    result: dict[str, Any] | None
    error: str | None = None


class Health(BaseModel):
    status: str
    database: str
