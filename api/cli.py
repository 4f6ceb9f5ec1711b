"""The ``embedq`` command line."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from embedq.api import commands
from embedq.api.clihelp import HelpFormatter, add_command, json_flag
from embedq.api.collections_cli import add_commands as add_collection_commands
from embedq.api.collections_cli import add_job_filters
from embedq.api.errors import exit_code
from embedq.api.output import quiet_on_closed_pipe
from embedq.api.search_cli import add_search_options
from embedq.tasks.errors import translate
from embedq.tasks.logs import configure_logging
from embedq.tasks.runtime import close_runtime
from embedq.tasks.settings import get_settings

log = logging.getLogger("embedq")
LONG_RUNNING = frozenset({"worker", "api", "flower"})
"""Commands that run until stopped: they leave through the interpreter's ordinary exit."""
_command: str | None = None
"""The command ``main`` ran last (``leave`` decides by it)."""


def _add_index(sub: Any) -> None:
    p = add_command(
        sub,
        "index",
        "index documents into a collection",
        [
            "embedq index demo/corpus.jsonl --collection demo",
            "embedq index notes/ --collection notes --chunk-tokens 128",
            "cat report.txt | embedq index - --format text --id report-2024 --collection docs",
            "embedq index big.jsonl -c papers --wait --json   # with a broker: follow the job",
        ],
        "Index documents into a collection, creating it on first use. Unchanged documents "
        "cost nothing; changed ones replace their old chunks.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="JSONL, CSV/TSV, a folder of .txt/.md files, or - for stdin",
    )
    p.add_argument("--collection", "-c", required=True, help="the collection to index into")
    p.add_argument("--model", help="model of a new collection: default, a local folder or a hub ID")
    p.add_argument("--chunk-tokens", type=int, help="window size in tokens (<= 512)")
    p.add_argument("--overlap", type=int, help="tokens shared by consecutive windows")
    p.add_argument(
        "--format",
        choices=["jsonl", "csv", "tsv", "text"],
        help="input format (default: from the extension; stdin is JSONL). With text, each "
        "file is one document; stdin is one document with the id from --id",
    )
    p.add_argument(
        "--id",
        dest="stdin_id",
        metavar="ID",
        help="with - --format text: the document's id (default: stdin-<hash of the text>)",
    )
    p.add_argument("--index", help='FAISS index type of a new collection (default "Flat")')
    p.add_argument("--wait", action="store_true", help="with a broker: follow the job to the end")
    json_flag(p, "the job and the records it rejected")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.index)


def _add_search(sub: Any) -> None:
    p = add_command(
        sub,
        "search",
        "search a collection",
        [
            'embedq search demo "trains that float on magnets" -k 3',
            'embedq search demo "protein folding" --json',
            "embedq search demo --queries demo/queries.txt -k 3",
            "embedq search scifact --queries queries.jsonl -k 10 --json",
        ],
        "Search a collection with one query, or with a file of queries: JSONL "
        "({_id|id, text}), or .txt with one query per line (its id is the line number).",
    )
    p.add_argument("collection", help="the collection to search")
    p.add_argument("query", nargs="?", help="query text (not blank)")
    p.add_argument(
        "--queries", metavar="FILE", help="JSONL or .txt file of queries; - reads stdin (JSONL)"
    )
    p.add_argument("-k", type=int, default=10, help="documents per query (default 10)")
    json_flag(p, "hits (one line per query with --queries)")
    add_search_options(p)
    p.set_defaults(func=commands.search)


def _add_jobs(sub: Any) -> None:
    p = add_command(
        sub,
        "jobs",
        "list jobs, or show, cancel, resume or reconcile them",
        [
            "embedq jobs",
            "embedq jobs show 3f2a9c1e-... --json",
            "embedq jobs cancel 3f2a9c1e-...",
            "embedq jobs resume            # queue the unfinished batches of running jobs",
            "embedq jobs reconcile         # queue again what the broker or workers lost",
        ],
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["show", "resume", "cancel", "reconcile"],
        help="show one job; cancel one; resume: queue the unfinished batches of running jobs; "
        "reconcile: queue again what the broker or workers lost, once",
    )
    p.add_argument("job_id", nargs="?", help="a job id, or a prefix of it that only one job has")
    p.add_argument("--limit", type=int, default=20, help="jobs per page, newest first (default 20)")
    add_job_filters(p)
    json_flag(p, "the jobs")
    p.set_defaults(func=commands.jobs)


def _add_db(sub: Any) -> None:
    p = add_command(
        sub,
        "db",
        "database administration",
        ["EMBEDQ_DATABASE_URL=postgresql+psycopg://embedq@db:5432/embedq embedq db upgrade"],
    )
    p.add_argument("action", choices=["upgrade"], help="upgrade: apply migrations")
    p.set_defaults(func=commands.db)


def _add_services(sub: Any) -> None:
    p = add_command(
        sub,
        "worker",
        "run a Celery worker (needs EMBEDQ_BROKER_URL)",
        [
            "embedq worker -Q embed        # one per GPU",
            "embedq worker -Q index        # exactly one: the index writer",
            "EMBEDQ_METRICS_PORT=9100 embedq worker -Q default --concurrency 4",
        ],
    )
    p.add_argument(
        "-Q", "--queues", default="embed", help="embed | index | default (default: embed)"
    )
    p.add_argument(
        "--concurrency", type=int, default=1, help="processes (default queue only; default 1)"
    )
    p.add_argument("--loglevel", default="INFO", help="DEBUG, INFO, WARNING... (default INFO)")
    p.set_defaults(func=commands.worker)
    p = add_command(
        sub,
        "api",
        "run the HTTP API",
        [
            "EMBEDQ_API_KEYS=true embedq api --host 0.0.0.0 --port 8000",
            "curl -s localhost:8000/metrics",
        ],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="server processes (needs a broker)")
    p.add_argument(
        "--insecure", action="store_true", help="allow no API keys on a non-loopback address"
    )
    p.set_defaults(func=commands.serve_api)
    p = add_command(
        sub,
        "flower",
        "run Flower, the Celery monitor",
        ["FLOWER_BASIC_AUTH=admin:secret embedq flower --port 5555"],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5555, help="port (default 5555)")
    p.add_argument(
        "--insecure", action="store_true", help="allow no login on a non-loopback address"
    )
    p.set_defaults(func=commands.flower)


def _add_completion(sub: Any) -> None:
    p = add_command(
        sub,
        "completion",
        "print the shell completion script",
        [
            'eval "$(embedq completion bash)"      # in ~/.bashrc',
            'eval "$(embedq completion zsh)"       # in ~/.zshrc',
            "embedq completion fish > ~/.config/fish/completions/embedq.fish",
        ],
        "Print a script that completes embedq's commands, options and choices in your shell.",
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    p.set_defaults(func=_completion)


def _completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["embedq"], shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedq",
        description="Chunk, embed, index and search text corpora.",
        epilog="examples:\n"
        "  embedq index demo/corpus.jsonl --collection demo\n"
        '  embedq search demo "trains that float on magnets" -k 3\n'
        "  embedq COMMAND --help            # every command's options and examples",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log more")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND --help)"
    )
    for add in (_add_index, _add_search, _add_jobs, _add_db, _add_services):
        add(sub)
    from embedq.api.analysis_cli import add_commands

    add_commands(sub)
    from embedq.api.keys_cli import add_commands as add_key_commands

    add_key_commands(sub)
    _add_completion(sub)
    add_collection_commands(sub)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run() -> NoReturn:
    """The ``embedq`` command: ``main``, then ``leave``."""
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown, which frees every loaded module
    one by one: a quarter of a second of a short command's life (``embedq index --wait`` of
    one document: 1.0 s → 0.75 s). The command's work is done by now (files closed,
    transactions committed, messages sent); the streams are flushed, the exit handlers run
    and the database connections closed first. A command that still has threads running, or
    one that runs until stopped, exits the ordinary way."""
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if busy or _command in LONG_RUNNING:
        sys.exit(code)
    close_runtime()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (``| head``) has been answered already.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()  # logging's flush among them
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    global _command
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions: answer, then exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    _command = args.command
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"EMBEDQ_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"embedq: error: bad setting: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, logging.INFO if args.verbose else logging.WARNING)
    _quiet_libraries()
    try:
        return quiet_on_closed_pipe(lambda: int(args.func(args)))
    except Exception as exc:
        known = translate(exc)
        if known is None:
            raise
        print(f"embedq: error: {known}", file=sys.stderr)
        return exit_code(known)
    except KeyboardInterrupt:
        print("embedq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    run()
