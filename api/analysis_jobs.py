"""``POST /v1/jobs`` kinds for the analysis jobs, and download of their result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from embedq.api.model_policy import check_model
from embedq.api.schemas import CollectionName
from embedq.tasks import analysis
from embedq.tasks.dispatch import Dispatcher
from embedq.tasks.errors import BadInput
from embedq.tasks.runtime import Runtime
from embedq.workers.clustering import check_k_range
from embedq.workers.constants import DEFAULT_TEMPLATE, Strategy
from embedq.workers.templates import check_template

Texts = Annotated[list[Annotated[str, Field(max_length=100_000)]], Field(max_length=10_000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _allowed_model(self) -> _Body:
        check_model(getattr(self, "model", None))
        return self

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"kind"}, exclude_none=True)


class EmbedJob(_Body):
    kind: Literal["embed"]
    texts: Texts | None = None
    collection: CollectionName | None = None
    model: str | None = None
    strategy: Strategy = "sentence-transformers"
    weighting: Literal["mean", "tokens"] = "mean"
    layer: int | None = None


class ZeroShotJob(_Body):
    kind: Literal["zero_shot"]
    texts: Texts | None = None
    collection: CollectionName | None = None
    labels: Annotated[list[str], Field(min_length=2, max_length=1000)]
    backend: Literal["embedding", "nli"] = "embedding"
    model: str | None = None
    template: str = DEFAULT_TEMPLATE
    multi_label: bool = False

    @field_validator("template")
    @classmethod
    def _literal_template(cls, value: str) -> str:
        return check_template(value)


class WordsJob(_Body):
    kind: Literal["words"]
    sentence: Annotated[str, Field(min_length=1, max_length=5000)]
    model: str | None = None
    layer: int = -1


class ClusterJob(_Body):
    kind: Literal["cluster"]
    collection: CollectionName
    method: Literal["kmeans", "agglomerative"] = "kmeans"
    k: Annotated[int, Field(ge=2, le=10_000)] | None = None
    k_range: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None
    threshold: Annotated[float, Field(gt=0, le=2)] | None = None

    @field_validator("k_range")
    @classmethod
    def _bounded_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            check_k_range(value[0], value[1])
        return value


class ExportJob(_Body):
    kind: Literal["export"]
    collection: CollectionName
    sample: Annotated[int, Field(ge=1)] | None = None


class EvalStsJob(_Body):
    kind: Literal["eval_sts"]
    file: str
    split: str = "test"
    model: str | None = None


class EvalBeirJob(_Body):
    kind: Literal["eval_beir"]
    dir: str
    collection: CollectionName | None = None
    split: str = "test"
    model: str | None = None


ANALYSIS_BODIES: dict[str, type[_Body]] = {
    "embed": EmbedJob,
    "zero_shot": ZeroShotJob,
    "words": WordsJob,
    "cluster": ClusterJob,
    "export": ExportJob,
    "eval_sts": EvalStsJob,
    "eval_beir": EvalBeirJob,
}


def datasets_dir(rt: Runtime) -> Path:
    """Where evaluation data named over HTTP must live: ``<data dir>/datasets``."""
    return rt.settings.data_dir / "datasets"


def _confine(rt: Runtime, params: dict[str, Any]) -> dict[str, Any]:
    """Resolve an evaluation path under the datasets folder; refuse any other place.

    The CLI may read any file its user can; an HTTP client names files on the server, so it
    only reaches the folder an operator filled for that purpose.
    """
    for key in ("file", "dir"):
        if key in params:
            root = datasets_dir(rt).resolve()
            refused = BadInput(f"{key} must name a path inside {root} (relative to it)")
            # Before resolve(), which raises ValueError on a NUL character.
            if "\x00" in str(params[key]):
                raise refused
            path = (root / str(params[key])).resolve()
            if not path.is_relative_to(root):
                raise refused
            params[key] = str(path)
    return params


def start_analysis(rt: Runtime, dispatcher: Dispatcher, body: _Body) -> str:
    """Create the job and hand it on: to its queue, or to the in-process runner."""
    kind = str(getattr(body, "kind", ""))
    return analysis.start_analysis(rt, dispatcher, kind, _confine(rt, body.params()))
