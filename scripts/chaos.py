"""A longer chaos run: more SIGKILLs of the embed worker and the index writer, more documents.

Runs ``tests/integration/test_recovery.py::test_kill_9_of_workers_and_writer_at_random_moments``
with bigger numbers (PostgreSQL and Redis DB 12 as the tests use them), a number of times in
a row, each with its own random seed, printed so that a failing run can be repeated:

    python scripts/chaos.py --kills 40 --docs 200 --runs 3
    python scripts/chaos.py --seed 758262233          # repeat one run
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/integration/test_recovery.py::test_kill_9_of_workers_and_writer_at_random_moments"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs per run (default 40)")
    parser.add_argument("--docs", type=int, default=200, help="documents, at most 264")
    parser.add_argument("--runs", type=int, default=1, help="runs in a row, new seed each")
    parser.add_argument("--seed", type=int, help="the seed of one run to repeat")
    args = parser.parse_args()
    if not 1 <= args.docs <= 264:
        parser.error("--docs must be between 1 and 264 (the demo corpus's one-window documents)")
    failed = 0
    for run in range(1, args.runs + 1):
        seed = args.seed or random.randrange(1, 1 << 30)
        env = {
            **os.environ,
            "EMBEDQ_CHAOS_KILLS": str(args.kills),
            "EMBEDQ_CHAOS_DOCS": str(args.docs),
            "EMBEDQ_CHAOS_SEED": str(seed),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        print(f"run {run}/{args.runs}: {args.kills} kills, {args.docs} documents, seed {seed}")
        started = time.monotonic()
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST],
            cwd=ROOT,
            env=env,
        )
        took = time.monotonic() - started
        print(f"run {run}: {'passed' if code == 0 else 'FAILED'} in {took:.0f} s (seed {seed})")
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
