"""``POST /v1/jobs`` kinds for the analysis jobs, and download of their result files."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from api.background import JobRunner
from api.operations import _hand_on
from api.schemas import CollectionName
from tasks.analysis import AnalysisError, create_analysis_job, run_analysis_job
from tasks.dispatch import InlineDispatcher, dispatcher_for
from tasks.runtime import Runtime

Texts = Annotated[list[Annotated[str, Field(max_length=100_000)]], Field(max_length=10_000)]
Strategy = Literal["sentence-transformers", "mean", "cls", "pooler", "second-to-last"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    template: str = "This text is about {}."
    multi_label: bool = False


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


def _run_here(rt: Runtime, job_id: str) -> None:
    run_analysis_job(rt, job_id)


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
            path = (root / str(params[key])).resolve()
            if "\x00" in str(params[key]) or not path.is_relative_to(root):
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    f"{key} must name a path inside {root} (relative to it)",
                )
            params[key] = str(path)
    return params


def start_analysis(rt: Runtime, runner: JobRunner, body: _Body) -> str:
    """Create the job and hand it on: to its queue, or to the in-process runner."""
    kind = str(getattr(body, "kind", ""))
    try:
        job_id = create_analysis_job(rt, kind, _confine(rt, body.params()))
    except AnalysisError as exc:
        code = status.HTTP_404_NOT_FOUND if "no collection" in str(exc) else 422
        raise HTTPException(code, str(exc)) from exc
    dispatcher = dispatcher_for(rt, job_id)
    if isinstance(dispatcher, InlineDispatcher):
        runner.submit(rt, job_id, partial(_run_here, rt, job_id))
    else:
        _hand_on(rt, job_id, partial(dispatcher.analyse, job_id, kind))
    return job_id
