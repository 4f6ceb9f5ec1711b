"""What each CLI command does; argument parsing lives in api.cli."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.search import SearchError, get_collection
from api.search import search as run_search
from storage.index_store import check_collection_name
from storage.jobs import cancel_job, job_errors, job_view, list_jobs
from storage.models import Document, Job, JobStatus
from storage.schema import SchemaNotReady, ensure_ready, upgrade
from tasks.indexing import CollectionSpec, JobInputError
from tasks.producer import follow, submit_index_job
from tasks.runtime import Runtime, get_runtime
from workers.models import ModelError


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def ready_runtime() -> Runtime:
    """The process runtime with a schema that is up to date (SQLite is upgraded in place)."""
    rt = get_runtime()
    try:
        ensure_ready(rt.sessions.kw["bind"])
    except SchemaNotReady as exc:
        raise UserError(str(exc)) from exc
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
        raise UserError(str(exc)) from exc
    rt = ready_runtime()
    spec = CollectionSpec(args.collection, args.model, args.chunk_tokens, args.overlap)
    stdin = sys.stdin.buffer if "-" in args.paths else None
    try:
        job_id = submit_index_job(
            rt, spec, args.paths, fmt=args.format, stdin=stdin, progress=not args.quiet
        )
    except (JobInputError, ModelError) as exc:
        raise UserError(str(exc)) from exc
    if rt.settings.broker_url and not args.wait:
        if args.json:
            return show_job(rt, job_id, as_json=True, with_errors=True)
        print(job_id)
        return 0
    if rt.settings.broker_url:
        follow(rt, job_id, progress=not args.quiet)
    return show_job(rt, job_id, as_json=args.json, with_errors=True)


def show_job(rt: Runtime, job_id: str, *, as_json: bool, with_errors: bool) -> int:
    with rt.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise UserError(f"no job {job_id!r}")
        view = job_view(session, job)
        errors = job_errors(session, job_id) if with_errors else []
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
    rt = ready_runtime()
    if args.action == "resume":
        return resume_jobs(rt, args)
    if args.action == "reconcile":
        return reconcile_jobs(rt, args)
    if args.action == "cancel":
        return cancel(rt, args)
    if args.action == "show":
        if not args.job_id:
            raise UserError("jobs show needs a JOB_ID")
        return show_job(rt, args.job_id, as_json=args.json, with_errors=True)
    with rt.sessions() as session:
        views = [job_view(session, j) for j in list_jobs(session, args.limit)]
    if args.json:
        _out(views)
        return 0
    for v in views:
        p = v["progress"]
        print(
            f"{v['id']}  {v['kind']:<8} {v['status']:<10} {v['collection'] or '-':<20} "
            f"{p['done']}/{p['total']}  {v['created_at']}"
        )
    return 0


def cancel(rt: Runtime, args: argparse.Namespace) -> int:
    if not args.job_id:
        raise UserError("jobs cancel needs a JOB_ID")
    with rt.sessions.begin() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        if session.get(Job, args.job_id) is None:
            raise UserError(f"no job {args.job_id!r}")
        if not cancel_job(session, args.job_id):
            raise UserError(f"job {args.job_id} has already finished")
    show_job(rt, args.job_id, as_json=args.json, with_errors=False)
    return 0


def resume_jobs(rt: Runtime, args: argparse.Namespace) -> int:
    from tasks.dispatch import dispatcher_for
    from tasks.indexing import resume

    report = resume(rt, dispatcher_for(rt), args.job_id)
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
    _need_broker(rt)
    from tasks.definitions import CeleryBroker
    from tasks.reconcile import reconcile

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
    if not (report.requeued or report.finished or report.catch_up or report.stalled):
        print("nothing to do: no lost batch, no settled job left running, indexes up to date")
    return 0


def _ids(ids: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _read_queries(path: str) -> Iterator[tuple[str, str]]:
    try:
        fh = sys.stdin if path == "-" else Path(path).open(encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot read queries: {exc}") from exc
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid = obj.get("query_id", obj.get("_id", obj.get("id")))
                text = obj.get("text", obj.get("query"))
            except (ValueError, AttributeError) as exc:
                raise UserError(f"{path}:{number}: not a JSON object") from exc
            if qid is None or not isinstance(text, str):
                raise UserError(f"{path}:{number}: a query needs an id and a text")
            yield str(qid), text


def search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        raise UserError("give either a query text or --queries FILE")
    rt = ready_runtime()
    pairs = list(_read_queries(args.queries)) if args.queries else [("q", args.query)]
    try:
        for start in range(0, len(pairs), 256):
            chunk = pairs[start : start + 256]
            results = run_search(rt, args.collection, [t for _, t in chunk], args.k)
            for (qid, _), hits in zip(chunk, results, strict=True):
                _print_hits(rt, args, qid, hits)
    except SearchError as exc:
        raise UserError(str(exc)) from exc
    return 0


def _print_hits(rt: Runtime, args: argparse.Namespace, qid: str, hits: list[Any]) -> None:
    if args.json:
        if args.queries:
            _out(
                {"query_id": qid, "hits": [{"id": h.id, "score": round(h.score, 6)} for h in hits]}
            )
        else:
            _out({"hits": [h.as_dict() for h in hits]})
        return
    snippets = _snippets(rt, args.collection, hits)
    if args.queries:
        print(f"# {qid}")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit.score:.4f}  {hit.id}  {snippets.get(hit.id, '')}")


def _snippets(rt: Runtime, collection: str, hits: list[Any], width: int = 120) -> dict[str, str]:
    from sqlalchemy import select

    from storage.documents import embedding_input

    with rt.sessions() as session:
        coll = get_collection(session, collection)
        rows = session.execute(
            select(Document.external_id, Document.title, Document.text).where(
                Document.collection_id == coll.id,
                Document.external_id.in_([h.id for h in hits]),
            )
        ).all()
    texts = {r.external_id: embedding_input(r.title, r.text) for r in rows}
    out = {}
    for h in hits:
        span = " ".join(texts.get(h.id, "")[h.start : h.end].split())
        out[h.id] = span if len(span) <= width else span[: width - 1] + "…"
    return out


def _need_broker(rt: Runtime) -> str:
    if not rt.settings.broker_url:
        raise UserError("EMBEDQ_BROKER_URL is not set: workers need a broker (redis://...)")
    return rt.settings.broker_url


def worker(args: argparse.Namespace) -> int:
    """A worker for one kind of queue: embed (GPU, solo pool), index (the single writer),
    default (CPU work). Models load on the first task, never in a parent that forks."""
    rt = ready_runtime()
    _need_broker(rt)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    from tasks.app import QUEUES, app

    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise UserError(f"unknown queue(s) {', '.join(unknown)}; use {', '.join(QUEUES)}")
    if "index" in queues and len(queues) > 1:
        raise UserError("the index queue needs a worker of its own (the single writer)")
    solo = queues != ["default"] or args.concurrency == 1
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--pool={'solo' if solo else 'prefork'}",
        f"--concurrency={1 if solo else args.concurrency}",
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

    rt = ready_runtime()
    if args.workers > 1 and not rt.settings.broker_url:
        raise UserError("--workers > 1 needs a broker: without one each process would run jobs")
    uvicorn.run(
        "api.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers
    )
    return 0


def flower(args: argparse.Namespace) -> int:
    """Flower on the same broker; FLOWER_BASIC_AUTH=user:password turns on basic auth."""
    rt = get_runtime()
    _need_broker(rt)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.app:app",
        "flower",
        f"--address={args.host}",
        f"--port={args.port}",
    ]
    os.execv(sys.executable, argv)
