"""``python -m bench NAME [options]``: run one benchmark; ``all`` runs each at its small
default size, ``all --full`` at its full size (SciFact quality only then: it indexes the whole
corpus). ``gpu-pack`` prepares the GPU run (see bench/gpu.sh)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import gpu_pack, load, precision, quality, scale, search, throughput, updates

Main = Callable[[list[str] | None], None]
BENCHES: dict[str, Main] = {
    "throughput": throughput.main,
    "precision": precision.main,
    "updates": updates.main,
    "search": search.main,
    "scale": scale.main,
    "load": load.main,
    "quality": quality.main,
}
TOOLS: dict[str, Main] = {"gpu-pack": gpu_pack.main}
SIZED = ("throughput", "precision", "updates", "search", "scale")  # take --full
FULL_ONLY = ("quality",)


def run_all(full: bool) -> None:
    for name, run in BENCHES.items():
        if name in FULL_ONLY and not full:
            continue
        print(f"== {name}", flush=True)
        run(["--full"] if full and name in SIZED else [])


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in BENCHES:
        BENCHES[args[0]](args[1:])
    elif args and args[0] in TOOLS:
        TOOLS[args[0]](args[1:])
    elif not args or args[0] in ("all", "--full"):
        run_all("--full" in args)
    else:
        sys.exit(f"usage: python -m bench [{'|'.join([*BENCHES, *TOOLS])}|all] [--full] [options]")


if __name__ == "__main__":
    main()
