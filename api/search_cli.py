"""Command line of search options and of ``embedq collections reindex``."""

from __future__ import annotations

import argparse
from typing import Any

from embedq.api.clihelp import add_command, json_flag
from embedq.api.commands import _out, ready_runtime
from embedq.tasks.errors import BadInput
from embedq.tasks.fusion import METHODS
from embedq.tasks.reindex import ReindexError, reindex
from embedq.tasks.search import DEFAULT_MODE, MODES, SearchOptions

DEFAULTS = SearchOptions()


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help=f"dense vectors, BM25 over the windows, or both fused (default {DEFAULT_MODE})",
    )
    p.add_argument(
        "--filter",
        metavar="JSON",
        help='conditions on meta, e.g. \'{"year": {"gte": 2010}, "topic": "bees"}\'',
    )
    p.add_argument(
        "--fusion",
        choices=METHODS,
        default=DEFAULTS.fusion,
        help="hybrid: mix of min-max normalised scores (default) or reciprocal rank fusion",
    )
    p.add_argument(
        "--alpha", type=float, default=DEFAULTS.alpha, help="mix: weight of the dense side"
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=DEFAULTS.candidates,
        help="hybrid/rerank: documents per side",
    )
    p.add_argument("--nprobe", type=int, help="IVF lists to read (default: a quarter, 8..256)")
    p.add_argument("--ef-search", type=int, help="HNSW candidates to keep (default 128)")
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        help="re-rank the top candidates with a local cross-encoder checkpoint",
    )


def add_reindex_command(actions: Any) -> None:
    """``embedq collections reindex NAME --index FACTORY``."""
    p = add_command(
        actions,
        "reindex",
        "rebuild a collection's FAISS index from its stored vectors (no embedding)",
        [
            "embedq collections reindex demo --index IVF64,Flat",
            "embedq collections reindex demo --index Flat",
        ],
    )
    p.add_argument("name", help="the collection")
    p.add_argument("--index", required=True, help="FAISS index factory string, e.g. IVF64,Flat")
    json_flag(p, "what was rebuilt")
    p.set_defaults(func=reindex_collection)


def reindex_collection(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    try:
        done = reindex(rt, args.name, args.index)
    except ReindexError as exc:
        raise BadInput(str(exc)) from exc
    if args.json:
        _out(done.as_dict())
    else:
        print(
            f"collection {done.collection}: {done.previous} -> {done.index}, "
            f"{done.vectors} vectors in {done.seconds:.1f} s"
        )
    return 0
