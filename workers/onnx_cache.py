"""ONNX copies of a sentence-transformers model, made on first use and kept beside it.

``model.eager-fused.onnx`` is the whole sentence-transformers pipeline (transformer, pooling,
normalise) exported in fp32 with its attention, layer norms and GELUs fused into ONNX
Runtime's own operators; ``model.int8-fused-{7,8}bit.onnx`` is the same graph with its weights
quantised to int8 (ONNX Runtime dynamic quantisation), 8-bit on CPUs with VNNI. Both live in
``<model folder>/.embedq/onnx-<key>/``, where the key is a SHA-256 of the model folder's
files, so a changed model gets new copies; when the model folder is read-only they go to
``$XDG_CACHE_HOME/embedq/<folder digest>/onnx-<key>/``. Building needs torch; using a built
copy needs only ``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from embedq.workers.models import ModelError, cpu_has_vnni

log = logging.getLogger(__name__)
CACHE = ".embedq"
FP32 = "model.eager-fused.onnx"
"""Named by its recipe (``embedq.workers.onnx_export``): a new recipe makes a new file."""


def int8_bits() -> int:
    """Weight width of the int8 copy for this CPU: 8 with VNNI, 7 without (see ``quantise``)."""
    return 8 if cpu_has_vnni() else 7


def int8_name(bits: int | None = None) -> str:
    return f"model.int8-fused-{bits or int8_bits()}bit.onnx"


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and CACHE not in p.relative_to(folder).parts and not p.name.startswith(".")
    )


def _stamp(folder: Path, files: list[Path]) -> dict[str, list[int]]:
    return {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def model_key(folder: Path) -> str:
    """SHA-256 (first 16 hex digits) of the folder's file names and contents.

    The digest is remembered with the files' sizes and modification times, so a cold process
    re-reads the weights only when they changed."""
    files = _files(folder)
    stamp = _stamp(folder, files)
    memo = _memo_path(folder)
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if saved.get("stamp") == stamp:
            return str(saved["key"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode() + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    key = digest.hexdigest()[:16]
    with contextlib.suppress(OSError):
        _write_atomic(memo, json.dumps({"stamp": stamp, "key": key}).encode())
    return key


def _writable_root(folder: Path) -> Path:
    root = folder / CACHE
    try:
        root.mkdir(exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return root
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedq"
        name = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        fallback = base / name
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _memo_path(folder: Path) -> Path:
    return _writable_root(folder) / "key.json"


def cache_dir(folder: Path) -> Path:
    """Where the ONNX copies of the model in ``folder`` live (created when missing)."""
    path = _writable_root(folder) / f"onnx-{model_key(folder)}"
    path.mkdir(exist_ok=True)
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time per cache folder, across processes."""
    with (directory / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def onnx_file(folder: str | Path, int8: bool) -> Path:
    """The fp32 (or int8) ONNX copy of the sentence-transformers model in ``folder``, built
    on first use."""
    folder = Path(folder)
    directory = cache_dir(folder)
    target = directory / (int8_name() if int8 else FP32)
    if target.is_file():
        return target
    with _locked(directory):
        if not (directory / FP32).is_file():
            from embedq.workers.onnx_export import export

            export(folder, directory / FP32)
        if int8 and not target.is_file():
            from embedq.workers.onnx_export import quantise

            quantise(directory / FP32, target, bits=int8_bits())
        _remove_stale(directory)
    if not target.is_file():
        raise ModelError(f"cannot build {target}")
    return target


def _remove_stale(directory: Path) -> None:
    """Copies made by an earlier recipe are never read again."""
    current = {FP32, int8_name(7), int8_name(8)}
    for path in directory.glob("*.onnx"):
        if path.name not in current:
            path.unlink(missing_ok=True)
