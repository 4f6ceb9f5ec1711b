"""``embedq collections list|show|delete``, and the filters of ``embedq jobs``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from embedq.api.clihelp import add_command, json_flag
from embedq.api.commands import ready_runtime
from embedq.api.output import print_table
from embedq.api.search_cli import add_reindex_command
from embedq.tasks import collections


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def add_commands(sub: Any) -> None:
    p = add_command(
        sub,
        "collections",
        "list, show, delete or reindex collections",
        [
            "embedq collections list",
            "embedq collections show demo --json",
            "embedq collections delete demo",
            "embedq collections reindex demo --index IVF64,Flat",
        ],
    )
    actions = p.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="list, show, delete or reindex"
    )
    ls = add_command(
        actions,
        "list",
        "every collection with its sizes",
        ["embedq collections list", "embedq collections list --json --limit 10"],
    )
    ls.add_argument("--limit", type=int, default=100, help="collections per page (default 100)")
    ls.add_argument("--cursor", help="the 'next' of a previous page")
    json_flag(ls, 'a page: {"collections": [...], "next": CURSOR | null}')
    ls.set_defaults(func=list_collections)
    show = add_command(
        actions,
        "show",
        "one collection's settings and sizes",
        ["embedq collections show demo", "embedq collections show demo --json"],
    )
    show.add_argument("name", help="the collection")
    json_flag(show, "the collection")
    show.set_defaults(func=show_collection)
    rm = add_command(
        actions,
        "delete",
        "delete a collection: documents, vectors, index files, pending jobs",
        ["embedq collections delete demo"],
    )
    rm.add_argument("name", help="the collection")
    json_flag(rm, "what was deleted")
    rm.set_defaults(func=delete_collection)
    add_reindex_command(actions)


def list_collections(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    page = collections.list_collections(rt, limit=args.limit, cursor=args.cursor)
    if args.json:
        _out(page)
        return 0
    rows = page["collections"]
    if not rows:
        print("no collections")
    else:
        print_table(
            ["name", "documents", "chunks", "indexed", "index", "model"],
            [
                [c["name"], c["documents"], c["chunks"], c["indexed"], c["index"], c["model"]]
                for c in rows
            ],
        )
    if page["next"]:
        print(f"... more: embedq collections list --cursor {page['next']}")
    return 0


def show_collection(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    info = collections.show_collection(rt, args.name)
    if args.json:
        _out(info)
        return 0
    for key, value in info.items():
        print(f"{key + ':':<14}{value}")
    return 0


def delete_collection(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    deleted = collections.delete_collection(rt, args.name)
    if args.json:
        _out(deleted.as_dict())
        return 0
    cancelled = deleted.cancelled_jobs
    print(
        f"deleted collection {deleted.name}: {deleted.documents} documents, "
        f"{deleted.chunks} chunks" + (f", {len(cancelled)} job(s) cancelled" if cancelled else "")
    )
    return 0


def add_job_filters(p: argparse.ArgumentParser) -> None:
    """The options of ``embedq jobs`` that filter and page the listing."""
    p.add_argument("--status", help="queued, running, succeeded, failed, cancelled (a,b: either)")
    p.add_argument("--collection", help="jobs of this collection")
    p.add_argument("--kind", help="index, embed, cluster, ... (a,b: either)")
    p.add_argument("--cursor", help="the 'next' of a previous page")
