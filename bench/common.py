"""Shared pieces of the benchmarks: data paths, the CLI, timing, machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMBEDQ_SHARED_DATA") or ROOT.parent / "shared" / "data")


def scifact_dir() -> Path:
    path = SHARED / "scifact"
    if not (path / "corpus.jsonl").exists():
        sys.exit(f"SciFact not found at {path} (the benchmarks need ../shared/data)")
    return path


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            yield json.loads(line)


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update({"EMBEDQ_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **extra})
    return env


def embedq(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "embedq.api.cli", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"embedq {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def scalar(env: dict[str, str], sql: str, **params: Any) -> Any:
    """One value from the database a benchmark's ``env`` points at (SQLite in its data
    folder unless ``EMBEDQ_DATABASE_URL`` is set)."""
    from sqlalchemy import create_engine, text

    from embedq.tasks.settings import Settings

    url = env.get("EMBEDQ_DATABASE_URL") or Settings(data_dir=Path(env["EMBEDQ_DATA_DIR"])).db_url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()
    finally:
        engine.dispose()


def machine() -> str:
    import torch

    cpu, flags = platform.processor() or platform.machine(), "flags unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            # The features a forward pass or the tokenizer can use: figures compare only
            # between machines that share them.
            wanted = ("avx", "amx", "fma", "vnni", "bf16", "f16c")
            found = [f for f in line.split(":", 1)[1].split() if f.startswith(wanted)]
            flags = "flags " + " ".join(sorted(found))
            break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return (
        f"{cpu}, {os.cpu_count()} cores ({flags}), torch {torch.__version__} "
        f"({threads} threads), {gpu}"
    )


# --------------------------------------------------------------- synthetic collections, RSS


def random_unit_vectors(n: int, dim: int, rng: Any) -> Any:
    import numpy as np

    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def bench_runtime(data_dir: Path) -> Any:
    """A runtime on ``data_dir`` with the schema in place (SQLite unless a URL is given)."""
    from embedq.storage.schema import upgrade
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    rt = Runtime(Settings(data_dir=data_dir))
    upgrade(rt.sessions.kw["bind"])
    return rt


def fill_synthetic(
    rt: Any,
    name: str,
    n: int,
    *,
    seed: int = 0,
    page: int = 20_000,
    tag: str = "syn",
    text: Callable[[int], str] | None = None,
    meta: Callable[[int], dict[str, Any]] | None = None,
    tokens: int = 6,
) -> int:
    """Create collection ``name`` (bundled model, its default windows) holding ``n`` one-window
    documents with random unit vectors, inserted in bulk; returns the collection id. A
    document's text and meta come from ``text(number)`` and ``meta(number)`` when given. No
    snapshot is written: publish one with the index writer."""
    import numpy as np
    from sqlalchemy import func, insert, select, update

    from embedq.storage.documents import content_hash
    from embedq.storage.models import Chunk, Collection, Document, chunk_id
    from embedq.tasks.collection_setup import CollectionSpec, ensure_collection

    coll = ensure_collection(rt, CollectionSpec(name))
    rng = np.random.default_rng(seed)
    with rt.sessions() as session:
        doc_id = (session.scalar(select(func.max(Document.id))) or 0) + 1
        seq = session.scalar(select(Collection.seq).where(Collection.id == coll.id)) or 0
    for start in range(0, n, page):
        count = min(page, n - start)
        vectors = random_unit_vectors(count, coll.dim, rng)
        docs, chunks = [], []
        for i in range(count):
            number = start + i
            body = text(number) if text else f"synthetic document {tag} {number}"
            digest = content_hash(None, body)
            seq += 1
            docs.append(
                {
                    "id": doc_id,
                    "collection_id": coll.id,
                    "external_id": f"{tag}-{number}",
                    "text": body,
                    "content_hash": digest,
                    "indexed_hash": digest,
                    **({"meta": meta(number)} if meta else {}),
                }
            )
            chunks.append(
                {
                    "id": chunk_id(coll.id, seq),
                    "collection_id": coll.id,
                    "document_id": doc_id,
                    "window": 0,
                    "start": 0,
                    "end": len(body),
                    "tokens": tokens,
                    "vector": vectors[i].tobytes(),
                }
            )
            doc_id += 1
        with rt.sessions.begin() as session:
            session.execute(insert(Document), docs)
            session.execute(insert(Chunk), chunks)
            session.execute(update(Collection).where(Collection.id == coll.id).values(seq=seq))
    return int(coll.id)


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``python -m MODULE ...``; (seconds, peak RSS of that process in bytes, stdout)."""
    import tempfile
    import time

    if cmd[1:2] != ["-m"]:
        raise ValueError("run_measured runs python -m MODULE commands")
    wrapped = [cmd[0], "-m", "bench.peak", *cmd[2:]]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.run(wrapped, env=env, stdout=out, stderr=err, cwd=ROOT, check=False)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        errors = err.read().decode(errors="replace")
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{errors}")
        peaks = [line.split()[1] for line in errors.splitlines() if line.startswith("embedq-peak")]
        return seconds, int(peaks[-1]) if peaks else 0, out.read().decode()


def peak_rss(pid: int | None = None) -> int:
    """VmHWM (peak resident set) of a running process, in bytes; this one by default."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@contextmanager
def api_server(data_dir: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An ``embedq api`` process on a free port over ``data_dir``: (its URL, the process),
    stopped afterwards."""
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = cli_env(data_dir, TOKENIZERS_PARALLELISM="false")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedq.api.cli",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"embedq api exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"embedq api did not start within 120 s; see {log}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
