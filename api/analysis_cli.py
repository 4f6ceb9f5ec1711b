"""CLI commands for the analysis jobs: embed, classify, words, cluster, export, eval."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from api.commands import UserError, ready_runtime
from storage.models import Job, JobStatus
from tasks.analysis import AnalysisError, create_analysis_job, results_dir, run_analysis_job
from tasks.dispatch import dispatcher_for
from tasks.producer import follow
from tasks.runtime import Runtime


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def run_job(rt: Runtime, kind: str, params: dict[str, Any], *, inline: bool = False) -> Any:
    """Create the job, run it (queued when a broker is set, unless ``inline``), return result."""
    try:
        job_id = create_analysis_job(rt, kind, params)
    except AnalysisError as exc:
        raise UserError(str(exc)) from exc
    if inline or not rt.settings.broker_url:
        run_analysis_job(rt, job_id)
    else:
        dispatcher_for(rt).analyse(job_id, kind)
        follow(rt, job_id, progress=False, interval=0.2)
    with rt.sessions() as session:
        job = session.get_one(Job, job_id)
    if job.status != JobStatus.succeeded:
        raise UserError(f"{kind} job {job_id} {job.status.value}: {job.error}")
    return job_id, job.result or {}


def _read_inputs(path: str) -> list[str]:
    """One text per line, or JSONL objects with a ``text`` field."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                texts.append(str(json.loads(line)["text"]))
            except (ValueError, KeyError) as exc:
                raise UserError(f"{path}:{n}: expected a JSON object with 'text'") from exc
        else:
            texts.append(line)
    return texts


def embed(args: argparse.Namespace) -> int:
    texts = list(args.text or []) + (_read_inputs(args.input) if args.input else [])
    if not texts:
        raise UserError("give --text (repeatable) or --input FILE")
    params = {"texts": texts, "model": args.model, "strategy": args.strategy}
    _, result = run_job(ready_runtime(), "embed", params)
    if args.json:
        _out({k: result[k] for k in ("model", "strategy", "dim", "vectors")})
    else:
        print(
            f"{len(result['vectors'])} vectors of {result['dim']} dimensions "
            f"({result['model']}, {result['strategy']})"
        )
    return 0


def classify(args: argparse.Namespace) -> int:
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if bool(args.text) == bool(args.collection):
        raise UserError("give either --text (repeatable) or --collection NAME")
    params = {
        "texts": args.text,
        "collection": args.collection,
        "labels": labels,
        "backend": args.backend,
        "model": args.model,
        "template": args.template,
        "multi_label": args.multi_label,
    }
    _, result = run_job(ready_runtime(), "zero_shot", params)
    if args.json:
        _out({"results": result["results"]})
        return 0
    for row in result["results"]:
        key = row.get("id", row.get("index"))
        best = ", ".join(f"{x['label']} {x['score']:.3f}" for x in row["labels"][:3])
        print(f"{key}: {best}")
    return 0


def words(args: argparse.Namespace) -> int:
    params = {"sentence": args.sentence, "model": args.model, "layer": args.layer}
    _, result = run_job(ready_runtime(), "words", params)
    if args.json:
        _out(result)
        return 0
    for rep in result["repeated"]:
        print(f"{rep['word']}: occurrences {rep['occurrences']}")
        for row in rep["cosine"]:
            print("   " + " ".join(f"{x:6.3f}" for x in row))
    if not result["repeated"]:
        print("no repeated words")
    return 0


def _k_range(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        low, high = (int(x) for x in text.split("-"))
    except ValueError as exc:
        raise UserError(f"--k-range takes A-B, e.g. 2-12, not {text!r}") from exc
    if not 2 <= low <= high:
        raise UserError("--k-range needs 2 <= A <= B")
    return [low, high]


def cluster(args: argparse.Namespace) -> int:
    params = {
        "collection": args.collection,
        "k": args.k,
        "k_range": _k_range(args.k_range),
        "method": args.method,
        "threshold": args.threshold,
    }
    rt = ready_runtime()
    job_id, result = run_job(rt, "cluster", params)
    if args.plot:
        shutil.copyfile(results_dir(rt, job_id) / "clusters.png", args.plot)
    if args.json:
        _out(result)
        return 0
    sizes = [c["size"] for c in result["clusters"]]
    print(f"{result['k']} clusters ({result['method']}) over {sum(sizes)} documents")
    for c in result["clusters"]:
        examples = ", ".join(str(e["id"]) for e in c["examples"][:3])
        print(f"  {c['cluster']:>3}  {c['size']:>6}  e.g. {examples}")
    return 0


def export(args: argparse.Namespace) -> int:
    params = {
        "collection": args.collection,
        "outdir": str(Path(args.outdir).resolve()),
        "sample": args.sample,
    }
    _, result = run_job(ready_runtime(), "export", params, inline=True)
    if args.json:
        _out(result)
    else:
        print(f"wrote {result['count']} vectors to {result['dir']}/vecs.tsv and meta.tsv")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    if args.suite == "sts":
        params: dict[str, Any] = {"file": args.path, "split": args.split, "model": args.model}
        _, result = run_job(rt, "eval_sts", params)
        metrics: tuple[str, ...] = ("pearson", "spearman")
    else:
        params = {
            "dir": args.path,
            "collection": args.collection,
            "split": args.split,
            "model": args.model,
        }
        _, result = run_job(rt, "eval_beir", params, inline=True)
        metrics = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
    if args.json:
        _out(result)
    else:
        print("  ".join(f"{m}: {result[m]:.4f}" for m in metrics))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("embed", help="vectors for texts")
    p.add_argument("--text", action="append", help="a text (repeatable)")
    p.add_argument("--input", help="file: one text per line, or JSONL with 'text'")
    p.add_argument("--model")
    p.add_argument(
        "--strategy",
        default="sentence-transformers",
        choices=["sentence-transformers", "mean", "cls", "pooler", "second-to-last"],
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=embed)

    p = sub.add_parser("classify", help="zero-shot labels for texts or a collection")
    p.add_argument("--text", action="append")
    p.add_argument("--collection")
    p.add_argument("--labels", required=True, help="comma-separated labels")
    p.add_argument("--backend", default="embedding", choices=["embedding", "nli"])
    p.add_argument("--model", help="for nli: an NLI checkpoint folder or ID")
    p.add_argument("--template", default="This text is about {}.")
    p.add_argument("--multi-label", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=classify)

    p = sub.add_parser("words", help="the same word in different contexts")
    p.add_argument("sentence")
    p.add_argument("--model")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1: last)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=words)

    p = sub.add_parser("cluster", help="cluster a collection's documents")
    p.add_argument("collection")
    p.add_argument("--k", type=int)
    p.add_argument("--k-range", help="choose k by silhouette over A-B")
    p.add_argument("--method", default="kmeans", choices=["kmeans", "agglomerative"])
    p.add_argument("--threshold", type=float, help="agglomerative: cosine distance cut")
    p.add_argument("--plot", help="write the 2-D scatter plot to this PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cluster)

    p = sub.add_parser("export", help="export vectors")
    p.add_argument("format", choices=["projector"])
    p.add_argument("collection")
    p.add_argument("outdir")
    p.add_argument("--sample", type=int, help="at most this many documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=export)

    p = sub.add_parser("eval", help="retrieval (BEIR) or similarity (STS) evaluation")
    p.add_argument("suite", choices=["beir", "sts"])
    p.add_argument("path", help="BEIR folder, or STS benchmark file")
    p.add_argument("--collection", help="beir: collection to index into (default: folder name)")
    p.add_argument("--split", default="test")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=evaluate)
