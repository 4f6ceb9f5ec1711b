"""Settings, read from ``EMBEDQ_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDQ_", extra="ignore")

    data_dir: Path = Field(Path("embedq-data"), description="index files, exports, uploads")
    database_url: str | None = Field(None, description="default: SQLite in data_dir")
    broker_url: str | None = Field(None, description="Redis URL; unset = run jobs in-process")
    result_backend: str | None = Field(None, description="Celery results; default: the broker")
    max_attempts: int = Field(5, ge=1, description="deliveries of a batch before it is failed")
    max_pending_batches: int = Field(32, ge=1, description="producer waits above this")
    model: str = Field("default", description="model for new collections")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: str = Field("auto", description="auto | fp32 | bf16 | fp16")
    batch_docs: int = Field(64, ge=1, le=10_000, description="documents per embed task")
    batch_tokens: int | None = Field(
        None, ge=512, description="tokens per forward pass; default 65536 on CUDA, 4096 on CPU"
    )
    batch_lease_s: float = Field(
        3600, gt=0, description="a queued batch no worker began for this long is queued again"
    )
    reconcile_every_s: float = Field(60, gt=0, description="period of the reconciler")
    publish_rows: int = Field(
        20_000, ge=0, description="publish a snapshot once this many rows are unpublished"
    )
    publish_fraction: float = Field(
        0.1, ge=0, description="... or this fraction of the published snapshot, if larger"
    )
    publish_interval_s: float = Field(
        300, ge=0, description="... or when the oldest unpublished change is this old"
    )
    search_threads: int = Field(
        1, ge=0, description="FAISS threads for a one-query search; 0 = FAISS's default"
    )
    api_keys: bool = Field(False, description="require an API key on every route but /healthz")
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest request body the API reads (413)"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'embedq.db'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
