"""CLI commands for the analysis jobs: embed, classify, words, cluster, export, eval."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from embedq.api import guards
from embedq.api.clihelp import add_command, json_flag
from embedq.api.commands import ready_runtime
from embedq.api.output import print_table
from embedq.storage.models import JobStatus
from embedq.tasks.analysis import results_dir, start_analysis
from embedq.tasks.dispatch import dispatcher_for, here
from embedq.tasks.errors import BadInput, NotFound
from embedq.tasks.producer import follow
from embedq.tasks.runtime import Runtime
from embedq.workers.clustering import check_k_range
from embedq.workers.constants import DEFAULT_TEMPLATE, STRATEGIES


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def run_job(rt: Runtime, kind: str, params: dict[str, Any], *, inline: bool = False) -> Any:
    """Create the job, run it (queued when a broker is set, unless ``inline``: here), and
    return its id and result once it has finished."""
    dispatcher = here(rt) if inline else dispatcher_for(rt)
    job_id = start_analysis(rt, dispatcher, kind, params)
    job = follow(rt, job_id, progress=False, interval=0.2)
    if job.status != JobStatus.succeeded:
        raise BadInput(f"{kind} job {job_id} {job.status.value}: {job.error}")
    return job_id, job.result or {}


def collection_runtime(name: str) -> Runtime:
    """The runtime for a command that reads an existing collection (refused, naming the data
    folder and the collections there, when it does not exist)."""
    rt = ready_runtime(read_only=True)
    if problem := guards.unknown_collection(rt, name):
        raise NotFound(problem)
    return rt


def _read_inputs(path: str) -> list[str]:
    """One text per line, or JSONL objects with a ``text`` field."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                texts.append(str(json.loads(line)["text"]))
            except (ValueError, KeyError) as exc:
                raise BadInput(f"{path}:{n}: expected a JSON object with 'text'") from exc
        else:
            texts.append(line)
    return texts


def embed(args: argparse.Namespace) -> int:
    texts = list(args.text or []) + (_read_inputs(args.input) if args.input else [])
    if bool(texts) == bool(args.collection):
        raise BadInput("give --text (repeatable) or --input FILE, or --collection NAME")
    params = {
        "texts": texts,
        "collection": args.collection,
        "weighting": args.weighting,
        "model": args.model,
        "strategy": args.strategy,
    }
    rt = collection_runtime(args.collection) if args.collection else ready_runtime()
    _, result = run_job(rt, "embed", params)
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
        raise BadInput("give either --text (repeatable) or --collection NAME")
    params = {
        "texts": args.text,
        "collection": args.collection,
        "labels": labels,
        "backend": args.backend,
        "model": args.model,
        "template": args.template,
        "multi_label": args.multi_label,
    }
    rt = collection_runtime(args.collection) if args.collection else ready_runtime()
    _, result = run_job(rt, "zero_shot", params)
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
        raise BadInput(f"--k-range takes A-B, e.g. 2-12, not {text!r}") from exc
    try:
        check_k_range(low, high)
    except ValueError as exc:
        raise BadInput(f"--k-range: {exc}") from exc
    return [low, high]


def cluster(args: argparse.Namespace) -> int:
    params = {
        "collection": args.collection,
        "k": args.k,
        "k_range": _k_range(args.k_range),
        "method": args.method,
        "threshold": args.threshold,
    }
    rt = collection_runtime(args.collection)
    job_id, result = run_job(rt, "cluster", params)
    if args.plot:
        shutil.copyfile(results_dir(rt, job_id) / "clusters.png", args.plot)
    if args.json:
        _out(result)
        return 0
    sizes = [c["size"] for c in result["clusters"]]
    print(f"{result['k']} clusters ({result['method']}) over {sum(sizes)} documents")
    print_table(
        ["cluster", "size", "nearest the centre"],
        [
            [c["cluster"], c["size"], ", ".join(str(e["id"]) for e in c["examples"][:3])]
            for c in result["clusters"]
        ],
    )
    return 0


def export(args: argparse.Namespace) -> int:
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BadInput(f"{outdir} is a file: give a folder for vecs.tsv and meta.tsv")
    params = {"collection": args.collection, "outdir": str(outdir.resolve()), "sample": args.sample}
    _, result = run_job(collection_runtime(args.collection), "export", params, inline=True)
    if args.json:
        _out(result)
    else:
        print(f"wrote {result['count']} vectors to {outdir / 'vecs.tsv'} and meta.tsv")
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
    elif "modes" in result:
        for mode, scores in result["modes"].items():
            print(f"{mode:<7} " + "  ".join(f"{m}: {scores[m]:.4f}" for m in metrics))
    else:
        print("  ".join(f"{m}: {result[m]:.4f}" for m in metrics))
    return 0


def add_commands(sub: Any) -> None:
    _add_embed(sub)
    _add_classify(sub)
    _add_words(sub)
    _add_cluster(sub)
    _add_export(sub)
    _add_eval(sub)


def _add_embed(sub: Any) -> None:
    p = add_command(
        sub,
        "embed",
        "vectors for texts, or for a collection's documents",
        [
            'embedq embed --text "A cat sleeps." --text "Stocks fell." --strategy mean --json',
            "embedq embed --input sentences.txt --json > vectors.json",
            "embedq embed --collection demo --weighting tokens",
        ],
        "Vectors for texts (one per text, in input order; a long text is the mean of its "
        "windows), or with --collection each stored document's vector, the mean of its "
        "window vectors, without embedding again. Results also go to vectors.npy.",
    )
    p.add_argument("--text", action="append", help="a text to embed (repeatable)")
    p.add_argument("--input", metavar="FILE", help="one text per line, or JSONL with 'text'")
    p.add_argument("--collection", help="document vectors of this collection instead of texts")
    p.add_argument(
        "--weighting",
        choices=["mean", "tokens"],
        default="mean",
        help="how window vectors combine: plain mean (default) or weighted by token count",
    )
    p.add_argument("--model", help="model spec for texts: default, a folder or a hub ID")
    p.add_argument(
        "--strategy",
        default="sentence-transformers",
        choices=STRATEGIES,
        help="pooling: the model's own (default), or for BERT-family checkpoints "
        + ", ".join(STRATEGIES[1:]),
    )
    json_flag(p, "the model, strategy, dimension and vectors")
    p.set_defaults(func=embed)


def _add_classify(sub: Any) -> None:
    p = add_command(
        sub,
        "classify",
        "zero-shot labels for texts or a collection",
        [
            'embedq classify --text "The striker scored twice" --labels sports,cooking',
            "embedq classify --collection demo --labels rail,gardening,history --json",
            "embedq classify --text T --labels a,b --backend nli --model ./bart-large-mnli",
        ],
    )
    p.add_argument("--text", action="append", help="a text to label (repeatable)")
    p.add_argument("--collection", help="label every document of this collection")
    p.add_argument("--labels", required=True, help="comma-separated labels")
    p.add_argument(
        "--backend",
        default="embedding",
        choices=["embedding", "nli"],
        help="embedding similarity (default) or an NLI checkpoint given with --model",
    )
    p.add_argument("--model", help="for nli: an NLI checkpoint folder or ID")
    p.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help=f'sentence a label is put into ({{}} marks it; default "{DEFAULT_TEMPLATE}")',
    )
    p.add_argument(
        "--multi-label", action="store_true", help="score each label on its own, not as a choice"
    )
    json_flag(p, "each text's labels and scores")
    p.set_defaults(func=classify)


def _add_words(sub: Any) -> None:
    p = add_command(
        sub,
        "words",
        "the same word in different contexts",
        ['embedq words "The bank approved my loan; we sat on the river bank." --json'],
        "Contextual vectors of each word, and for each repeated word the cosine between "
        "its occurrences.",
    )
    p.add_argument("sentence", help="the text to analyse")
    p.add_argument("--model", help="model spec: default, a folder or a hub ID")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1: last)")
    json_flag(p, "the words and the cosine matrices")
    p.set_defaults(func=words)


def _add_cluster(sub: Any) -> None:
    p = add_command(
        sub,
        "cluster",
        "cluster a collection's documents",
        [
            "embedq cluster demo --k-range 8-14 --plot clusters.png",
            "embedq cluster demo --k 12 --json",
            "embedq cluster demo --method agglomerative --threshold 0.6",
        ],
    )
    p.add_argument("collection", help="the collection to cluster")
    p.add_argument("--k", type=int, help="kmeans: number of clusters")
    p.add_argument("--k-range", help="kmeans: choose k by silhouette over A-B, e.g. 8-14")
    p.add_argument(
        "--method",
        default="kmeans",
        choices=["kmeans", "agglomerative"],
        help="kmeans (default; scales) or agglomerative (up to 20,000 documents)",
    )
    p.add_argument("--threshold", type=float, help="agglomerative: cosine distance cut")
    p.add_argument("--plot", metavar="FILE.png", help="write the 2-D scatter plot here")
    json_flag(p, "every document's cluster, sizes and examples")
    p.set_defaults(func=cluster)


def _add_export(sub: Any) -> None:
    p = add_command(
        sub,
        "export",
        "export a collection's document vectors",
        ["embedq export projector demo out/", "embedq export projector demo out/ --sample 1000"],
        "Write OUTDIR/vecs.tsv and OUTDIR/meta.tsv for projector.tensorflow.org.",
    )
    p.add_argument("format", choices=["projector"], help="projector: TensorFlow Projector TSVs")
    p.add_argument("collection", help="the collection to export")
    p.add_argument("outdir", help="folder to write into (created if missing)")
    p.add_argument("--sample", type=int, help="an even sample of at most this many documents")
    json_flag(p, "the count and paths")
    p.set_defaults(func=export)


def _add_eval(sub: Any) -> None:
    p = add_command(
        sub,
        "eval",
        "retrieval (BEIR) or similarity (STS) evaluation",
        [
            "embedq eval beir ../shared/data/scifact --collection scifact",
            "embedq eval sts ../shared/data/stsb/stsbenchmark.tsv.gz",
        ],
    )
    suites = p.add_subparsers(
        dest="suite", required=True, metavar="SUITE", help="beir or sts (SUITE --help)"
    )
    beir = add_command(
        suites,
        "beir",
        "index a BEIR folder, answer its queries, score nDCG@10, MRR@10, recall@10/100",
        ["embedq eval beir ../shared/data/scifact --collection scifact --json"],
        "Index DIR/corpus.jsonl into the collection (unchanged documents cost nothing), "
        "answer DIR/queries.jsonl and score against DIR/qrels/SPLIT.tsv.",
    )
    beir.add_argument("path", metavar="DIR", help="folder with corpus.jsonl, queries.jsonl, qrels/")
    beir.add_argument("--collection", help="collection to index into (default: folder name)")
    beir.add_argument("--split", default="test", help="qrels split (default test)")
    beir.add_argument("--model", help="model of a new collection")
    json_flag(beir, "the scores")
    sts = add_command(
        suites,
        "sts",
        "Pearson and Spearman of cosine similarity against gold scores",
        ["embedq eval sts ../shared/data/stsb/stsbenchmark.tsv.gz --split dev"],
        "Score the cosine similarity of each sentence pair of the split against the gold "
        "scores of an STS benchmark file (.tsv or .tsv.gz).",
    )
    sts.add_argument("path", metavar="FILE", help="STS benchmark file (.tsv or .tsv.gz)")
    sts.add_argument("--split", default="test", help="train, dev or test (default test)")
    sts.add_argument("--model", help="model spec: default, a folder or a hub ID")
    json_flag(sts, "the scores")
    p.set_defaults(func=evaluate)
