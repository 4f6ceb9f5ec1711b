"""The ``embedq`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from api import commands

log = logging.getLogger("embedq")


def _add_index(sub: Any) -> None:
    p = sub.add_parser("index", help="index documents into a collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="JSONL, CSV/TSV, folder, or -")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--model", help="model spec for a new collection (default: bundled)")
    p.add_argument("--chunk-tokens", type=int, help="window size in tokens (<= 512)")
    p.add_argument("--overlap", type=int, help="tokens shared by consecutive windows")
    p.add_argument("--format", choices=["jsonl", "csv", "tsv", "text"], help="input format")
    p.add_argument("--wait", action="store_true", help="with a broker: follow the job to the end")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.index)


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search a collection")
    p.add_argument("collection")
    p.add_argument("query", nargs="?", help="query text")
    p.add_argument("--queries", help="JSONL file of queries ({_id|id, text}), one result line each")
    p.add_argument("-k", type=int, default=10, help="documents per query")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.search)


def _add_jobs(sub: Any) -> None:
    p = sub.add_parser("jobs", help="list jobs, or show one")
    p.add_argument(
        "action",
        nargs="?",
        choices=["show", "resume", "cancel", "reconcile"],
        help="show one job; cancel one; resume: queue the unfinished batches of running jobs; "
        "reconcile: queue again what the broker or workers lost, once",
    )
    p.add_argument("job_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.jobs)


def _add_db(sub: Any) -> None:
    p = sub.add_parser("db", help="database administration")
    p.add_argument("action", choices=["upgrade"], help="apply migrations")
    p.set_defaults(func=commands.db)


def _add_services(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a Celery worker (needs EMBEDQ_BROKER_URL)")
    p.add_argument("-Q", "--queues", default="embed", help="embed | index | default")
    p.add_argument("--concurrency", type=int, default=1, help="processes (default queue only)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=commands.worker)
    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=commands.serve_api)
    p = sub.add_parser("flower", help="run Flower, the Celery monitor")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5555)
    p.set_defaults(func=commands.flower)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedq", description="Chunk, embed, index and search text corpora."
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_index, _add_search, _add_jobs, _add_db, _add_services):
        add(sub)
    from api.analysis_cli import add_commands

    add_commands(sub)
    from api.keys_cli import add_commands as add_key_commands

    add_key_commands(sub)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _quiet_libraries()
    try:
        return int(args.func(args))
    except commands.UserError as exc:
        print(f"embedq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embedq: interrupted", file=sys.stderr)
        return 130


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
