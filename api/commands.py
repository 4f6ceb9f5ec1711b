"""What each CLI command does; argument parsing lives in api.cli."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedq.api import guards
from embedq.api.exposure import start_problem
from embedq.api.output import print_table
from embedq.storage.collections import find_collection
from embedq.storage.index_store import check_collection_name
from embedq.storage.models import JobStatus
from embedq.storage.schema import ensure_ready, upgrade
from embedq.tasks import job_control, joblist
from embedq.tasks.broker import CeleryBroker
from embedq.tasks.collection_setup import CollectionSpec
from embedq.tasks.dispatch import dispatcher_for, require_broker
from embedq.tasks.errors import BadInput, Conflict, NotFound
from embedq.tasks.logs import logging_config
from embedq.tasks.names import EMBED_QUEUE, INDEX_QUEUE, QUEUES
from embedq.tasks.producer import follow, submit_index_job
from embedq.tasks.reconcile import reconcile
from embedq.tasks.runtime import Runtime, get_runtime
from embedq.tasks.search import SearchError, SearchOptions
from embedq.tasks.search import search as run_search
from embedq.tasks.worker_pool import worker_pool


def _refuse_unsafe_start(service: str, host: str | None, insecure: bool = False) -> None:
    """Refuse placeholder secrets, and an open API off loopback, before touching anything."""
    problem = start_problem(service, host, get_runtime().settings, insecure=insecure)
    if problem is not None:
        raise BadInput(problem)


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def ready_runtime(*, read_only: bool = False) -> Runtime:
    """The process runtime with a schema that is up to date (SQLite is upgraded in place).

    ``read_only``: a command that only reads refuses to start where there is no database,
    rather than create an empty one in whatever folder it was run from.
    """
    rt = get_runtime()
    if read_only and (problem := guards.missing_database(rt)):
        raise NotFound(problem)
    ensure_ready(rt.sessions.kw["bind"])
    return rt


def db(args: argparse.Namespace) -> int:
    rt = get_runtime()
    upgrade(rt.sessions.kw["bind"])
    print("database is up to date")
    return 0


def index(args: argparse.Namespace) -> int:
    try:
        check_collection_name(args.collection)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    rt = ready_runtime()
    spec = CollectionSpec(
        args.collection, args.model, args.chunk_tokens, args.overlap, args.index or "Flat"
    )
    _check_index_type(rt, args.collection, args.index)
    stdin = sys.stdin.buffer if "-" in args.paths else None
    job_id = submit_index_job(
        rt,
        spec,
        args.paths,
        fmt=args.format,
        stdin=stdin,
        stdin_id=getattr(args, "stdin_id", None),
        progress=not args.quiet,
    )
    # Embedded, the job has finished here; with a broker it runs on the workers.
    finished = JobStatus(job_control.describe(rt, job_id)["status"]).finished
    if not finished and not args.wait:
        if args.json:
            return show_job(rt, job_id, as_json=True, with_errors=True)
        print(job_id)
        return 0
    if not finished:
        follow(rt, job_id, progress=not args.quiet)
    return show_job(rt, job_id, as_json=args.json, with_errors=True)


def _check_index_type(rt: Runtime, name: str, factory: str | None) -> None:
    """``--index`` names the index type of a new collection; an existing one keeps its own."""
    if factory is None:
        return
    with rt.sessions() as session:
        coll = find_collection(session, name)
    if coll is not None and coll.index_factory != factory:
        raise BadInput(
            f"collection {name!r} uses index={coll.index_factory}, not {factory}; "
            f"change it with: embedq collections reindex {name} --index {factory}"
        )


def show_job(rt: Runtime, job_id: str, *, as_json: bool, with_errors: bool) -> int:
    view = job_control.describe(rt, job_id, with_errors=with_errors)
    errors = view.pop("errors", [])
    if as_json:
        _out({**view, "errors": errors})
    else:
        _print_job(view, errors)
    return (
        0
        if view["status"]
        in (JobStatus.succeeded.value, JobStatus.running.value, JobStatus.queued.value)
        else 1
    )


def _print_job(view: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    prog = view["progress"]
    print(
        f"job {view['id']} [{view['kind']}] {view['status']}: collection {view['collection']}, "
        f"{prog['done']}/{prog['total']} documents done, {view['unchanged']} unchanged, "
        f"{prog['failed']} failed, {len(errors)} rejected"
    )
    if view["error"]:
        print(f"  error: {view['error']}")
    for err in errors[:20]:
        where = f"{err.get('source', '')}:{err['line']}" if err.get("line") else "-"
        print(f"  {where}: {err['reason']}" + (f" (id {err['id']})" if "id" in err else ""))
    if len(errors) > 20:
        print(f"  ... and {len(errors) - 20} more (embedq jobs show {view['id']} --json)")


def jobs(args: argparse.Namespace) -> int:
    rt = ready_runtime(read_only=args.action != "resume")
    args.job_id = _full_job_id(rt, args.job_id)
    if args.action == "resume":
        return resume_jobs(rt, args)
    if args.action == "reconcile":
        return reconcile_jobs(rt, args)
    if args.action == "cancel":
        return cancel(rt, args)
    if args.action == "show":
        if not args.job_id:
            raise BadInput("jobs show needs a JOB_ID")
        return show_job(rt, args.job_id, as_json=args.json, with_errors=True)
    page = joblist.list_jobs(
        rt,
        status=args.status,
        collection=args.collection,
        kind=args.kind,
        limit=args.limit,
        cursor=args.cursor,
    )
    if args.json:
        _out(page)
        return 0
    if not page["jobs"]:
        print("no jobs")
        return 0
    print_table(
        ["id", "kind", "status", "collection", "done", "created"],
        [
            [
                v["id"],
                v["kind"],
                v["status"],
                v["collection"],
                f"{v['progress']['done']}/{v['progress']['total']}",
                v["created_at"],
            ]
            for v in page["jobs"]
        ],
    )
    if page["next"]:
        print(f"... more: embedq jobs --cursor {page['next']}")
    return 0


def _full_job_id(rt: Runtime, given: str | None) -> str | None:
    """The id of the job that ``given`` names: the id, or a prefix of it only one job has."""
    return joblist.resolve_job_id(rt, given) if given else given


def cancel(rt: Runtime, args: argparse.Namespace) -> int:
    if not args.job_id:
        raise BadInput("jobs cancel needs a JOB_ID")
    try:
        job_control.cancel(rt, args.job_id)
    except Conflict as exc:
        raise Conflict(f"job {args.job_id} has already finished") from exc
    show_job(rt, args.job_id, as_json=args.json, with_errors=False)
    return 0


def resume_jobs(rt: Runtime, args: argparse.Namespace) -> int:
    report = job_control.resume(rt, dispatcher_for(rt), args.job_id)
    if args.json:
        _out(report)
        return 0
    for row in report:
        state = (
            "finished"
            if row["finished"]
            else (
                "waiting for its batches" if row["sealed"] else "not sealed: its producer stopped"
            )
        )
        print(f"{row['id']}: {row['requeued']} batch(es) queued again, {state}")
    if not report:
        print("no running index jobs")
    return 0


def reconcile_jobs(rt: Runtime, args: argparse.Namespace) -> int:
    """Run the reconciler once, here, and say what it did (the workers run it on a timer)."""
    require_broker(rt.settings, "the reconciler")
    report = reconcile(rt, CeleryBroker())
    if args.json:
        _out(report.as_dict())
        return 0
    if report.broker_lost:
        print("the broker had lost its state: every pending batch was queued again")
    for reason, ids in report.requeued.items():
        print(f"{reason}: {len(ids)} batch(es) queued again ({_ids(ids)})")
    for job_id in report.finished:
        print(f"{job_id}: finished")
    for name in report.catch_up:
        print(f"collection {name}: index catch-up requested")
    for job in report.stalled:
        print(
            f"{job['id']}: not sealed and idle for {job['idle_s']} s: its producer may have "
            "stopped (embedq jobs cancel it, then submit the corpus again)"
        )
    for job_id, sent in report.fed.items():
        print(f"{job_id}: {sent} batch(es) handed on")
    if not (report.requeued or report.fed or report.finished or report.catch_up or report.stalled):
        print("nothing to do: no lost batch, no settled job left running, indexes up to date")
    return 0


def _ids(ids: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _read_queries(path: str) -> Iterator[tuple[str, str]]:
    try:
        fh = sys.stdin if path == "-" else Path(path).open(encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        raise BadInput(f"cannot read queries: {exc}") from exc
    plain = path.endswith(".txt")  # one query per line; its id is the line number
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if plain:
                yield str(number), line.strip()
                continue
            try:
                obj = json.loads(line)
                qid = obj.get("query_id", obj.get("_id", obj.get("id")))
                text = obj.get("text", obj.get("query"))
            except (ValueError, AttributeError) as exc:
                raise BadInput(f"{path}:{number}: not a JSON object") from exc
            if qid is None or not isinstance(text, str):
                raise BadInput(f"{path}:{number}: a query needs an id and a text")
            if not text.strip():
                raise BadInput(f"{path}:{number}: query {qid!r} is blank")
            yield str(qid), text


def search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        raise BadInput("give either a query text or --queries FILE")
    if args.query is not None and not args.query.strip():
        raise BadInput("the query is blank: give some text to search for")
    options = search_options(args)
    rt = ready_runtime(read_only=True)
    if problem := guards.unknown_collection(rt, args.collection):
        raise NotFound(problem)
    pairs = list(_read_queries(args.queries)) if args.queries else [("q", args.query)]
    try:
        for start in range(0, len(pairs), 256):
            chunk = pairs[start : start + 256]
            results = run_search(rt, args.collection, [t for _, t in chunk], args.k, options)
            for (qid, text), hits in zip(chunk, results, strict=True):
                _print_hits(args, qid, hits, text)
    except SearchError as exc:
        raise BadInput(str(exc)) from exc
    return 0


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The search options the command line asked for."""
    spec = None
    if args.filter is not None:
        try:
            spec = json.loads(args.filter)
        except ValueError as exc:
            raise BadInput(f"--filter is not JSON: {exc}") from exc
    return SearchOptions(
        mode=args.mode,
        filter=spec,
        fusion=args.fusion,
        alpha=args.alpha,
        candidates=args.candidates,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        rerank=args.rerank,
    )


def _print_hits(
    args: argparse.Namespace, qid: str, hits: list[Any], text: str, width: int = 120
) -> None:
    if args.json:
        if args.queries:
            _out(
                {"query_id": qid, "hits": [{"id": h.id, "score": round(h.score, 6)} for h in hits]}
            )
        else:
            _out({"hits": [h.as_dict() for h in hits]})
        return
    if args.queries:
        print(f"\n# {qid}: {text}")
    for rank, hit in enumerate(hits, 1):
        span = " ".join((hit.text or "").split())
        span = span if len(span) <= width else span[: width - 1] + "…"
        print(f"{rank:>3}. {hit.score:.4f}  {hit.id}  {span}")


def worker(args: argparse.Namespace) -> int:
    """A worker for one kind of queue: embed (threads in one process: two on a GPU, so that
    one batch is cut while another is in its forward pass), index (the single writer),
    default (CPU work). Models load on the first task, never in a parent that forks."""
    _refuse_unsafe_start("worker", None)
    rt = ready_runtime()
    require_broker(rt.settings)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if rt.settings.metrics_port:
        from embedq.tasks.metrics import prepare_worker_metrics

        prepare_worker_metrics()
    from embedq.tasks.app import app

    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise BadInput(f"unknown queue(s) {', '.join(unknown)}; use {', '.join(QUEUES)}")
    if INDEX_QUEUE in queues and len(queues) > 1:
        raise BadInput("the index queue needs a worker of its own (the single writer)")
    from embedq.workers.models import choose_device

    device = choose_device(rt.settings.device) if EMBED_QUEUE in queues else "cpu"
    pool, concurrency = worker_pool(queues, args.concurrency, rt.settings.embed_threads, device)
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--prefetch-multiplier=1",
        "--task-events",
        f"--hostname={'-'.join(queues)}-{os.getpid()}@%h",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def serve_api(args: argparse.Namespace) -> int:
    import uvicorn

    _refuse_unsafe_start("api", args.host, args.insecure)
    rt = ready_runtime()
    if args.workers > 1:
        require_broker(rt.settings, "--workers > 1 (without one each process would run jobs)")
    uvicorn.run(
        "embedq.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_keep_alive=rt.settings.keep_alive_s,
        # Applied in every server process: uvicorn's lines too follow EMBEDQ_LOG_FORMAT.
        log_config=logging_config(rt.settings.log_format, logging.INFO),
    )
    return 0


def flower(args: argparse.Namespace) -> int:
    """Flower on the same broker; FLOWER_BASIC_AUTH=user:password turns on basic auth."""
    _refuse_unsafe_start("flower", args.host, args.insecure)
    require_broker(get_runtime().settings)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "embedq.tasks.app:app",
        "flower",
        f"--address={args.host}",
        f"--port={args.port}",
        # No task can be applied, revoked or terminated from Flower: its login shows, not runs.
        "--read_only=true",
    ]
    os.execv(sys.executable, argv)
