"""Analysis jobs: one plain function per kind, run in-process or by the ``embedq.analyse`` task.

Each handler takes the runtime, the job id and its parameters and returns the result (a small
JSON object). Large outputs (vectors, plots, projector files) are written under
``<data dir>/results/<job id>/`` and the result names them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from embedq.storage.db import transaction
from embedq.storage.jobs import complete_job, create_job, fail_job, mark_running
from embedq.storage.leases import held_lease
from embedq.storage.models import Collection, Document, Job
from embedq.storage.vectors import document_vectors
from embedq.tasks import lookup, names
from embedq.tasks.collection_setup import CollectionSpec
from embedq.tasks.dispatch import Dispatcher, Work
from embedq.tasks.errors import BadInput, EmbedqError
from embedq.tasks.producer import follow, submit_index_job
from embedq.tasks.runtime import Runtime
from embedq.workers.models import canonical_spec

Handler = Callable[[Runtime, str, dict[str, Any]], dict[str, Any]]
INLINE_VECTORS = 10_000
"""Embedding results up to this many vectors are also kept in the job's result JSON."""


class AnalysisError(BadInput):
    """A job that cannot run as asked; its message becomes the job's error."""


def results_dir(rt: Runtime, job_id: str) -> Path:
    path = rt.settings.data_dir / "results" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def _collection(rt: Runtime, name: str) -> Collection:
    with rt.sessions() as session:
        return lookup.collection(session, name)


def _texts(params: dict[str, Any]) -> list[str]:
    texts = params.get("texts") or []
    if not texts or not all(isinstance(t, str) for t in texts):
        raise AnalysisError("give 'texts' (a list of strings) or a 'collection'")
    return list(texts)


def _iter_documents(rt: Runtime, coll: Collection, page: int = 256) -> Iterator[list[Any]]:
    last = 0
    while True:
        with rt.sessions() as session:
            rows = session.execute(
                select(Document.id, Document.external_id, Document.title, Document.text)
                .where(Document.collection_id == coll.id, Document.id > last)
                .order_by(Document.id)
                .limit(page)
            ).all()
        if not rows:
            return
        yield list(rows)
        last = rows[-1].id


# --- embed ---------------------------------------------------------------------------------


def run_embed(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Vectors for texts, or document vectors of a collection (mean of its windows)."""
    strategy = params.get("strategy") or "sentence-transformers"
    if params.get("collection"):
        coll = _collection(rt, params["collection"])
        with rt.sessions() as session:
            ids, vectors = document_vectors(
                session, coll.id, coll.dim, weighting=params.get("weighting", "mean")
            )
        model, labels = coll.model, {"ids": ids}
    else:
        from embedq.workers.pooling import cached_encoder

        model = canonical_spec(params.get("model") or rt.settings.model)
        encoder = cached_encoder(model, rt.settings.device, rt.settings.precision)
        max_tokens = encoder.max_tokens if strategy != "sentence-transformers" else None
        vectors, _windows, _spans = encoder.encode_long(
            _texts(params),
            strategy,
            max_tokens=params.get("max_tokens") or max_tokens or encoder.embedder.max_tokens,
            overlap=params.get("overlap") or 0,
            weighting=params.get("weighting", "mean"),
            normalize=bool(params.get("normalize", strategy == "sentence-transformers")),
            layer=params.get("layer"),
            batch_tokens=rt.settings.batch_tokens,
        )
        labels = {}
    out = results_dir(rt, job_id)
    np.save(out / "vectors.npy", vectors)
    body = {"model": model, "strategy": strategy, "dim": int(vectors.shape[1]), **labels}
    (out / "vectors.json").write_text(json.dumps({**body, "vectors": vectors.tolist()}))
    result: dict[str, Any] = {
        **body,
        "count": len(vectors),
        "files": ["vectors.npy", "vectors.json"],
    }
    if len(vectors) <= INLINE_VECTORS:
        result["vectors"] = vectors.tolist()
    return result


# --- zero-shot -----------------------------------------------------------------------------


def run_zero_shot(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    labels = params.get("labels") or []
    if len(labels) < 2:
        raise AnalysisError("give at least two labels")
    classify = _classifier(rt, params)
    results: list[dict[str, Any]] = []
    if params.get("collection"):
        coll = _collection(rt, params["collection"])
        for rows in _iter_documents(rt, coll):
            scores = classify([f"{r.title} {r.text}" if r.title else r.text for r in rows])
            results += [
                {"id": r.external_id, "labels": s} for r, s in zip(rows, scores, strict=True)
            ]
    else:
        scores = classify(_texts(params))
        results = [{"index": i, "labels": s} for i, s in enumerate(scores)]
    return {"backend": params.get("backend", "embedding"), "results": results}


def _classifier(rt: Runtime, params: dict[str, Any]) -> Callable[[list[str]], list[Any]]:
    from embedq.workers import zeroshot

    labels = list(params["labels"])
    template = params.get("template") or zeroshot.DEFAULT_TEMPLATE
    multi = bool(params.get("multi_label", False))
    backend = params.get("backend") or "embedding"
    if backend == "nli":
        if not params.get("model"):
            raise AnalysisError("the nli backend needs a model: an NLI checkpoint folder or ID")
        nli = zeroshot.NLIClassifier(params["model"])

        def run(texts: list[str]) -> list[Any]:
            return _shape(nli.classify(texts, labels, template=template, multi_label=multi))

        return run
    if backend != "embedding":
        raise AnalysisError(f"unknown backend {backend!r}; use embedding or nli")
    embedder = rt.embedder(params.get("model") or rt.settings.model)

    def run_embedding(texts: list[str]) -> list[Any]:
        return _shape(
            zeroshot.classify_embedding(
                embedder, texts, labels, template=template, multi_label=multi
            )
        )

    return run_embedding


def _shape(scores: list[list[tuple[str, float]]]) -> list[list[dict[str, Any]]]:
    return [[{"label": lab, "score": round(float(s), 6)} for lab, s in row] for row in scores]


# --- words ---------------------------------------------------------------------------------


def run_words(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from embedq.workers.pooling import cached_encoder
    from embedq.workers.words import analyse

    sentence = params.get("sentence") or params.get("text")
    if not isinstance(sentence, str) or not sentence.strip():
        raise AnalysisError("give a 'sentence'")
    encoder = cached_encoder(params.get("model") or rt.settings.model, rt.settings.device, "fp32")
    return analyse(encoder, sentence, layer=int(params.get("layer", -1)))


# --- cluster -------------------------------------------------------------------------------


def run_cluster(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from embedq.workers import clustering

    coll = _collection(rt, params.get("collection", ""))
    with rt.sessions() as session:
        ids, vectors = document_vectors(session, coll.id, coll.dim)
    if len(ids) < 2:
        raise AnalysisError(f"collection {coll.name!r} has fewer than two indexed documents")
    method = params.get("method") or "kmeans"
    scores: dict[int, float] | None = None
    if method == "agglomerative":
        result = clustering.agglomerative(vectors, float(params.get("threshold") or 0.5))
    elif method == "kmeans":
        k = params.get("k")
        if not k:
            low, high = params.get("k_range") or [2, min(10, len(ids) - 1)]
            k, scores = clustering.choose_k(vectors, int(low), int(high))
        result = clustering.kmeans(vectors, int(k))
    else:
        raise AnalysisError(f"unknown method {method!r}; use kmeans or agglomerative")
    out = results_dir(rt, job_id)
    clustering.scatter_png(
        clustering.project_2d(vectors),
        result.labels,
        out / "clusters.png",
        f"{coll.name}: {result.k} clusters ({method})",
    )
    body = result.to_dict(ids)
    body.update({"collection": coll.name, "method": method, "files": ["clusters.png"]})
    if scores:
        body["silhouette"] = {str(k): round(v, 4) for k, v in scores.items()}
    return body


# --- export --------------------------------------------------------------------------------


def run_export(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from embedq.storage.exports import write_projector

    coll = _collection(rt, params.get("collection", ""))
    with rt.sessions() as session:
        ids, vectors = document_vectors(session, coll.id, coll.dim, limit=params.get("sample"))
        titles = (
            dict(
                session.execute(
                    select(Document.external_id, Document.title).where(
                        Document.collection_id == coll.id, Document.external_id.in_(ids)
                    )
                ).all()
            )
            if len(ids) <= 50_000
            else {}
        )
    outdir = Path(params["outdir"]) if params.get("outdir") else results_dir(rt, job_id)
    if any(titles.values()):
        meta: list[Any] = [[i, titles.get(i) or ""] for i in ids]
        columns = ["id", "title"]
    else:
        meta, columns = [[i] for i in ids], ["id"]
    vecs, metas = write_projector(outdir, vectors, meta, columns)
    return {
        "collection": coll.name,
        "count": len(ids),
        "files": [vecs.name, metas.name],
        "dir": str(outdir),
    }


# --- evaluation ----------------------------------------------------------------------------


def read_sts(path: Path, split: str = "test") -> tuple[list[str], list[str], np.ndarray]:
    """STS benchmark TSV (gzipped or not): sentence pairs and gold scores of one split."""
    raw = path.open("rb")
    with raw, gzip.open(raw) if path.suffix == ".gz" else raw as fh:
        reader = csv.DictReader(
            io.TextIOWrapper(fh, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE
        )
        rows = [r for r in reader if r.get("split") == split]
    if not rows:
        raise AnalysisError(f"{path}: no rows in split {split!r}")
    gold = np.array([float(r["score"]) for r in rows])
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], gold


def run_eval_sts(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    path = Path(params.get("file", ""))
    if not path.is_file():
        raise AnalysisError(f"no such file: {path}")
    first, second, gold = read_sts(path, params.get("split") or "test")
    embedder = rt.embedder(params.get("model") or rt.settings.model)
    a, b = embedder.encode_texts(first), embedder.encode_texts(second)
    cosine = np.sum(a * b, axis=1)
    return {
        "file": str(path),
        "split": params.get("split") or "test",
        "pairs": len(gold),
        "pearson": round(float(pearsonr(cosine, gold)[0]), 4),
        "spearman": round(float(spearmanr(cosine, gold)[0]), 4),
    }


def run_eval_beir(rt: Runtime, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Index DIR/corpus.jsonl into the collection (unchanged documents are skipped), answer
    DIR/queries.jsonl, and score against DIR/qrels/<split>.tsv."""
    from embedq.tasks.search import DEFAULT_MODE, MODES, SearchOptions, search
    from embedq.workers.evaluation import evaluate, load_qrels

    folder = Path(params.get("dir", ""))
    split = params.get("split") or "test"
    needed = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise AnalysisError(f"not a BEIR folder, missing: {', '.join(missing)}")
    name = params.get("collection") or folder.name
    index_job = submit_index_job(
        rt, CollectionSpec(name, params.get("model")), [str(needed[0])], progress=False
    )
    follow(rt, index_job, progress=False)
    queries = [
        json.loads(line)
        for line in needed[1].read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    qrels = load_qrels(needed[2])
    modes = params.get("modes") or list(MODES)
    per_mode: dict[str, dict[str, float]] = {}
    for mode in modes:
        run: dict[str, list[str]] = {}
        options = SearchOptions(mode=mode, meta=False)
        for start in range(0, len(queries), 256):
            part = queries[start : start + 256]
            hits = search(rt, name, [q["text"] for q in part], 100, options)
            run.update(
                {str(q["_id"]): [h.id for h in hs] for q, hs in zip(part, hits, strict=True)}
            )
        per_mode[mode] = {k: round(v, 4) for k, v in evaluate(run, qrels).items()}
    main = DEFAULT_MODE if DEFAULT_MODE in per_mode else modes[0]
    return {
        "collection": name,
        "index_job": index_job,
        "split": split,
        "mode": main,
        **per_mode[main],
        "modes": per_mode,
    }


KINDS: dict[str, Handler] = {
    "embed": run_embed,
    "zero_shot": run_zero_shot,
    "words": run_words,
    "cluster": run_cluster,
    "export": run_export,
    "eval_sts": run_eval_sts,
    "eval_beir": run_eval_beir,
}
MODEL_KINDS = frozenset({"embed", "zero_shot", "words", "eval_sts"})
"""Model-heavy kinds run on the ``embed`` queue's (GPU) workers; the rest on ``default``."""


def create_analysis_job(rt: Runtime, kind: str, params: dict[str, Any]) -> str:
    if kind not in KINDS:
        raise AnalysisError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")
    coll_id = _collection(rt, params["collection"]).id if params.get("collection") else None
    with transaction(rt.sessions) as session:
        return create_job(session, kind, collection_id=coll_id, params=params)


def start_analysis(rt: Runtime, dispatcher: Dispatcher, kind: str, params: dict[str, Any]) -> str:
    """Create the job and hand it on: to its queue, or to be run in this process."""
    job_id = create_analysis_job(rt, kind, params)
    queue = names.EMBED_QUEUE if kind in MODEL_KINDS else names.DEFAULT_QUEUE
    run = partial(run_analysis_job, rt, job_id)
    dispatcher.start(Work(job_id, names.ANALYSE, (job_id,), run, queue))
    return job_id


def run_analysis_job(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    """Run a queued analysis job to its end under its lease (a second delivery of a job that
    is still running does nothing); the outcome is stored on the job row."""
    with held_lease(rt.sessions, job_id) as mine:
        return _run_analysis_job(rt, job_id) if mine else None


def _run_analysis_job(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    # Reads, then writes: take SQLite's write lock first (another writer, e.g. the
    # callback registered for this job, would make the upgrade fail as "locked").
    with transaction(rt.sessions, write=True) as session:
        job = session.get(Job, job_id)
        if job is None or job.status.finished:
            return None
        kind, params = job.kind, dict(job.params)
        mark_running(session, job_id)
    try:
        result = KINDS[kind](rt, job_id, params)
    except (EmbedqError, ValueError, LookupError, OSError) as exc:
        with rt.sessions.begin() as session:
            fail_job(session, job_id, str(exc))
        return None
    with rt.sessions.begin() as session:
        complete_job(session, job_id, result)
    return result
