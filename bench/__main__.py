"""``python -m bench NAME [options]``: run one benchmark; ``all`` runs each at its small
default size, ``all --full`` at its full size (SciFact quality only then: it indexes the whole
corpus). ``gpu-pack`` prepares the GPU run (see bench/gpu.sh)."""

from __future__ import annotations

import importlib
import sys

# Imported only when run, so that one benchmark needs only its own packages (the GPU machine
# has torch and transformers but not FAISS or the service's packages).
BENCHES = (
    "throughput",
    "precision",
    "updates",
    "search",
    "hybrid",
    "lexical",
    "scale",
    "load",
    "quality",
    "scrape",
    "listing",
    "submission",
    "cold",
    "sts",
    "pipeline",
)
TOOLS = {"gpu-pack": "gpu_pack"}
SIZED = (
    "throughput",
    "precision",
    "updates",
    "search",
    "hybrid",
    "scale",
    "scrape",
    "listing",
)  # take --full
FULL_ONLY = ("quality",)


def run(module: str, argv: list[str]) -> None:
    importlib.import_module(f"bench.{module}").main(argv)


def run_all(full: bool) -> None:
    for name in BENCHES:
        if name in FULL_ONLY and not full:
            continue
        print(f"== {name}", flush=True)
        run(name, ["--full"] if full and name in SIZED else [])


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in BENCHES:
        run(args[0], args[1:])
    elif args and args[0] in TOOLS:
        run(TOOLS[args[0]], args[1:])
    elif not args or args[0] in ("all", "--full"):
        run_all("--full" in args)
    else:
        sys.exit(f"usage: python -m bench [{'|'.join([*BENCHES, *TOOLS])}|all] [--full] [options]")


if __name__ == "__main__":
    main()
