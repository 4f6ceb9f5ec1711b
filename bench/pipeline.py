"""The indexing pipeline without the forward pass, against the bare tokenizer: a CPU proxy
for whether a GPU worker would be kept busy.

With a GPU, the forward pass is fast and everything around it (reading SQL, tokenising,
cutting windows, padding, writing vectors, the index writer) sets the pace. Here the encoder
costs nothing (``bench/null_encoder.py``), so the pipeline's tokens/s is that pace; the bare
tokenizer's tokens/s over the same documents (``encode_batch``, what no pipeline can beat) is
the baseline, measured in the same run. Ratio 1.0: nothing but tokenising costs anything.

- ``sqlite``: ``embedq index`` on the embedded default, in this process (model loaded
  first, its load not timed);
- ``postgresql``: PostgreSQL, Redis, one embed worker with the null encoder, the index
  writer, and ``embedq index --wait`` as a command, timed end to end (process start
  included; the fixed cost of one command, measured on one document, is shown apart), with
  the CPU seconds each of the stack's processes spent meanwhile (``bench/cpu.py``).

Both run with a GPU's task size (``--task-tokens``, 65,536: one CUDA forward pass, as in
``docker-compose.yml``) and the distributed worker with a GPU's two embed threads.

    python -m bench pipeline                 # SciFact, 5,183 documents, both back ends, 3 runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import cpu
from bench.common import cli_env, embedq, machine, read_jsonl, scalar, scifact_dir
from bench.throughput import _indexed_tokens as stored_tokens
from embedq.tasks.worker_pool import GPU_EMBED_THREADS
from embedq.workers.encoding import GPU_BATCH_TOKENS


def corpus_file(folder: Path, docs: int | None) -> tuple[Path, list[str]]:
    from embedq.storage.documents import embedding_input

    rows = list(read_jsonl(scifact_dir() / "corpus.jsonl", docs))
    path = folder / "corpus.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n"
            for d in rows
        ),
        encoding="utf-8",
    )
    return path, [embedding_input(d["title"], d["text"]) for d in rows]


def bare_tokenizer(texts: list[str]) -> float:
    """Seconds for the collection tokenizer's ``encode_batch`` of the documents, best of 3."""
    from embedq.workers.encoding import Embedder

    backend = Embedder(None, device="cpu", precision="fp32").chunker()._backend
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        backend.encode_batch(texts, add_special_tokens=False)
        best = min(best, time.perf_counter() - started)
    return best


def embedded(folder: Path, corpus: Path, task_tokens: int) -> tuple[float, int]:
    """In this process: seconds of ``submit_index_job`` with the model loaded, tokens stored."""
    from bench import null_encoder

    null_encoder.install()
    from embedq.storage.schema import ensure_ready
    from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
    from embedq.tasks.producer import submit_index_job
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    env = cli_env(folder)
    rt = Runtime(
        Settings(data_dir=Path(env["EMBEDQ_DATA_DIR"]), device="cpu", task_tokens=task_tokens)
    )
    ensure_ready(rt.sessions.kw["bind"])
    coll = ensure_collection(rt, CollectionSpec("pipe"))
    rt.embedder(coll.model).chunker()  # model and tokenizer loaded before the clock starts
    started = time.perf_counter()
    submit_index_job(rt, CollectionSpec("pipe"), [str(corpus)], progress=False)
    seconds = time.perf_counter() - started
    rt.sessions.kw["bind"].dispose()
    return seconds, stored_tokens(env, "pipe")


@contextmanager
def stack_for(folder: Path, corpus: Path, threads: int, task_tokens: int) -> Iterator[Stack]:
    """PostgreSQL, Redis, one embed worker with the null encoder and the index writer, warmed
    up; with the fixed cost of one ``embedq index --wait`` of one document."""
    from bench.stack import distributed as stack

    with stack(
        folder / "pg",
        embed_module="bench.null_encoder",
        EMBEDQ_DEVICE="cpu",
        EMBEDQ_EMBED_THREADS=str(threads),
        EMBEDQ_TASK_TOKENS=str(task_tokens),
    ) as env:
        one = corpus.with_name("one.jsonl")
        one.write_text(corpus.read_text(encoding="utf-8").splitlines(True)[0])
        embedq(env, "index", str(one), "-c", "warm", "-q", "--wait")  # the worker's model load
        started = time.perf_counter()
        embedq(env, "index", str(one), "-c", "one", "-q", "--wait")
        yield Stack(env, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Stack:
    env: dict[str, str]
    fixed: float  # seconds of one command indexing one document


def on_stack(stack: Stack, corpus: Path, collection: str) -> tuple[float, int, float, str]:
    """Seconds of ``embedq index --wait`` on the stack, tokens stored, the seconds from the
    job's first task to its end (the workers' own span), and where the CPU went meanwhile."""
    before = cpu.sample()
    started = time.perf_counter()
    embedq(stack.env, "index", str(corpus), "-c", collection, "-q", "--wait")
    secs = time.perf_counter() - started
    cpu_use = cpu.line(cpu.spent(before, cpu.sample()), secs)
    return secs, stored_tokens(stack.env, collection), workers_span(stack.env, collection), cpu_use


def workers_span(env: dict[str, str], collection: str) -> float:
    """Seconds from the first task a worker began to the job's end, from SQL's clocks."""
    sql = (
        "SELECT EXTRACT(EPOCH FROM j.finished_at - MIN(b.started_at)) FROM jobs j "
        "JOIN collections c ON c.id = j.collection_id JOIN job_batches b ON b.job_id = j.id "
        "WHERE c.name = :name GROUP BY j.id, j.finished_at"
    )
    return float(scalar(env, sql, name=collection))


def row_line(name: str, tokens: int, secs: float, bare_s: float, fixed: float) -> str:
    line = f"{name:>26}: {tokens / secs:9.0f} tokens/s ({secs:.2f} s)  ratio {bare_s / secs:.3f}"
    if fixed:
        line += f"  without the fixed cost ({fixed:.1f} s): {bare_s / (secs - fixed):.3f}"
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__)
    parser.add_argument("--docs", type=int, help="SciFact documents (default: all 5,183)")
    parser.add_argument("--no-distributed", action="store_true", help="SQLite only")
    parser.add_argument(
        "--embed-threads",
        type=int,
        default=GPU_EMBED_THREADS,
        help=f"embed tasks the worker runs at once (default {GPU_EMBED_THREADS}, as on a GPU)",
    )
    parser.add_argument(
        "--task-tokens",
        type=int,
        default=GPU_BATCH_TOKENS,
        help=f"tokens per embed task (default {GPU_BATCH_TOKENS}, one forward pass on a GPU)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each path, in turn (default 3): medians"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stacks:
        folder = Path(tmp)
        corpus, texts = corpus_file(folder, args.docs)
        stack = None
        if not args.no_distributed:
            stack = stacks.enter_context(
                stack_for(folder, corpus, args.embed_threads, args.task_tokens)
            )
        for run in range(1, args.runs + 1):
            # Each run against the bare tokenizer measured at its start: the machine's pace
            # drifts between runs.
            print(f"run {run}:")
            bare_s = bare_tokenizer(texts)
            secs, tokens = embedded(folder / f"sqlite{run}", corpus, args.task_tokens)
            if run == 1:
                print(
                    f"documents: {len(texts)}, tokens stored (windows): {tokens}, "
                    f"{args.task_tokens} tokens a task"
                )
            print(f"{'bare tokenizer':>26}: {tokens / bare_s:9.0f} tokens/s ({bare_s:.2f} s)")
            rows = [("sqlite, in process", secs, tokens, 0.0)]
            cpu_use = ""
            if stack is not None:
                secs, stored, span, cpu_use = on_stack(stack, corpus, f"pipe{run}")
                name = f"postgresql + celery ({args.embed_threads}t)"
                rows += [
                    (name, secs, stored, stack.fixed),
                    ("workers, first task to end", span, stored, 0.0),
                ]
            for name, secs, toks, fixed in rows:
                ratios.setdefault(name, []).append(bare_s / secs)
                print(row_line(name, toks, secs, bare_s, fixed), flush=True)
            if cpu_use:
                print(f"{'':>26}  {cpu_use}")
    print(f"medians of {args.runs} run(s):")
    for name, values in ratios.items():
        print(f"{name:>26}: ratio {statistics.median(values):.3f}")
