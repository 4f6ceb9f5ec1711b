"""``python -m bench NAME [options]``: run one benchmark, or all with small sizes."""

from __future__ import annotations

import sys

from bench import quality, throughput

BENCHES = {"throughput": throughput.main, "quality": quality.main}


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in BENCHES:
        names = ", ".join(BENCHES)
        if args and args[0] not in ("all", "--full"):
            sys.exit(f"usage: python -m bench [{names}|all] [options]")
        rest = args[1:] if args and args[0] == "all" else args
        for name, run in BENCHES.items():
            print(f"== {name}")
            run(rest if name == "throughput" else [])
        return
    BENCHES[args[0]](args[1:])


if __name__ == "__main__":
    main()
