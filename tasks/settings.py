"""Settings, read from ``EMBEDQ_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDQ_", extra="ignore")

    data_dir: Path = Field(Path("embedq-data"), description="index files, exports, uploads")
    database_url: str | None = Field(None, description="default: SQLite in data_dir")
    broker_url: str | None = Field(None, description="Redis URL; unset = run jobs in-process")
    result_backend: str | None = Field(None, description="Celery results; default: the broker")
    max_attempts: int = Field(5, ge=1, description="deliveries of a batch before it is failed")
    max_pending_batches: int = Field(
        16, ge=1, description="batch messages one job keeps in the broker (its window)"
    )
    model: str = Field("default", description="model for new collections")
    models: str | None = Field(
        None, description="comma-separated model specs HTTP requests may name; * = any"
    )
    model_cache: int = Field(4, ge=1, description="models a process keeps loaded at once")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: str = Field(
        "auto", description="auto | fp32 | bf16 | fp16 | int8 (CPU, ONNX Runtime, quantised)"
    )
    batch_docs: int = Field(1024, ge=1, le=10_000, description="documents per embed task, at most")
    task_tokens: int = Field(
        16_384,
        ge=256,
        le=10_000_000,
        description="tokens per embed task, estimated from the documents' length",
    )
    batch_tokens: int | None = Field(
        None, ge=512, description="tokens per forward pass; default 65536 on CUDA, 4096 on CPU"
    )
    embed_threads: int | None = Field(
        None,
        ge=1,
        le=16,
        description="embed tasks a worker runs at once (one forward pass at a time); "
        "default 2 on a GPU, 1 on a CPU",
    )
    batch_lease_s: float = Field(
        3600, gt=0, description="a queued batch no worker began for this long is queued again"
    )
    ingest_lease_s: float = Field(
        300, gt=0, description="an ingestion not heard from this long is taken as dead"
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
    insecure: bool = Field(
        False, description="allow the API without keys (Flower without a login) off loopback"
    )
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="API: an idle HTTP connection stays open this long; above clients' "
        "and load balancers' idle timeouts, so none reuses a connection as the server closes it",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest request body the API reads (413)"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="a worker serves Prometheus metrics here; 0 = off"
    )
    metrics_addr: str = Field("0.0.0.0", description="address of the worker metrics port")
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per log line"
    )
    max_upload_bytes: int = Field(
        16 * 1024**3, ge=1024, description="largest NDJSON upload the API stores (413)"
    )

    callback_attempts: int = Field(8, ge=1, description="POSTs of a job callback at most")
    callback_timeout_s: float = Field(10, gt=0, description="time allowed for one callback POST")
    callback_backoff_s: float = Field(2, gt=0, description="wait before the first retry")
    callback_backoff_max_s: float = Field(600, gt=0, description="longest wait between tries")
    callback_poll_s: float = Field(1, gt=0, description="how often finished jobs are checked")

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
