"""A one-off ``embedq search`` from a cold process against merely loading the model with
transformers (``import torch, transformers; AutoModel.from_pretrained(<bundled model>)``).

Runs alternate (reference, search, reference, ...) so that a busy machine slows both alike;
the figure is the ratio of the medians. The collection is indexed first, which also builds the
model's ONNX copy (a one-off per model).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cli_env, embedq, machine

DEMO = Path(__file__).resolve().parent.parent / "demo" / "corpus.jsonl"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cold")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args(argv)
    from embedq.workers.models import resolve_path

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = cli_env(Path(tmp), TRANSFORMERS_OFFLINE="1")
        embedq(env, "index", str(DEMO), "-c", "demo", "-q")
        load = (
            "import torch, transformers; "
            f"transformers.AutoModel.from_pretrained({resolve_path(None)!r})"
        )
        reference = [sys.executable, "-c", load]
        search = [
            sys.executable,
            "-m",
            "embedq.api.cli",
            "search",
            "demo",
            "solar power",
            "-k",
            "3",
        ]
        times: dict[str, list[float]] = {"load": [], "search": []}
        for _ in range(args.runs):
            times["load"].append(timed(reference, env))
            times["search"].append(timed(search, env))
    load_s, search_s = statistics.median(times["load"]), statistics.median(times["search"])
    print(f"transformers model load: median {load_s:.2f} s of {times['load']}")
    print(f"cold embedq search:      median {search_s:.2f} s of {times['search']}")
    print(f"ratio: {search_s / load_s:.2f}")
