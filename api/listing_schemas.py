"""Response bodies of the collection and job listings, and of a collection's deletion."""

from __future__ import annotations

from pydantic import BaseModel, Field

from embedq.api.schemas import CollectionView, JobView


class CollectionList(BaseModel):
    collections: list[CollectionView]
    next: str | None = Field(description="cursor of the next page; null on the last one")


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="newest first")
    next: str | None = Field(description="cursor of the next page; null on the last one")


class CollectionDeleted(BaseModel):
    name: str
    documents: int = Field(description="documents deleted")
    chunks: int = Field(description="chunk rows (vectors) deleted")
    cancelled_jobs: list[str] = Field(description="queued or running jobs of it, cancelled")
