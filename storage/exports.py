"""Exports of embeddings for the TensorFlow Embedding Projector (projector.tensorflow.org).

The projector loads two tab-separated files: ``vecs.tsv`` with one vector per line and
``meta.tsv`` with one line of metadata per vector. A metadata file with a single column has
no header; one with several columns starts with a header row of column names.

Floats are written with 9 significant digits, which round-trips every float32 exactly. Both
files are streamed (rows are written as they arrive) into temporary files that are fsynced
and renamed into place only when both are complete and their row counts agree; each file is
replaced atomically, ``meta.tsv`` after ``vecs.tsv``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from embedq.storage.files import fsync_dir

VECS_NAME = "vecs.tsv"
META_NAME = "meta.tsv"
_FLOAT_FORMAT = "%.9g"
_BATCH_ROWS = 4096
_UNSAFE = re.compile(r"[\t\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def sanitise(value: Any) -> str:
    """A metadata cell: ``None`` becomes empty; tabs and line breaks become spaces."""
    return "" if value is None else _UNSAFE.sub(" ", str(value))


def _batches(vectors: Iterable[np.ndarray] | np.ndarray) -> Iterator[np.ndarray]:
    """2-D float32 blocks from a matrix, an iterable of rows or an iterable of batches."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        for start in range(0, vectors.shape[0], _BATCH_ROWS):
            yield np.asarray(vectors[start : start + _BATCH_ROWS], dtype=np.float32)
        return
    for item in vectors:
        block = np.asarray(item, dtype=np.float32)
        if block.ndim == 1:
            block = block[np.newaxis, :]
        if block.ndim != 2:
            raise ValueError(f"expected vector rows or 2-D batches, got shape {block.shape}")
        yield block


def _write_vectors(fh: TextIO, vectors: Iterable[np.ndarray] | np.ndarray) -> int:
    rows, dim = 0, None
    for block in _batches(vectors):
        if dim is None:
            dim = block.shape[1]
        if block.shape[1] != dim or dim == 0:
            raise ValueError(f"vector width {block.shape[1]} differs from the first ({dim})")
        if not np.isfinite(block).all():
            raise ValueError("vectors contain NaN or infinity, which the projector cannot load")
        line = "\t".join([_FLOAT_FORMAT] * dim) + "\n"
        fh.writelines(line % tuple(row) for row in block.tolist())
        rows += block.shape[0]
    return rows


def _meta_cells(row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str]) -> list[str]:
    if isinstance(row, Mapping):
        return [sanitise(row.get(c)) for c in columns]
    if isinstance(row, str | bytes) or len(row) != len(columns):
        raise ValueError(f"metadata row {row!r} does not have {len(columns)} columns")
    return [sanitise(v) for v in row]


def _write_meta(
    fh: TextIO, meta_rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]
) -> int:
    if len(columns) > 1:
        fh.write("\t".join(sanitise(c) for c in columns) + "\n")
    rows = 0
    for row in meta_rows:
        fh.write("\t".join(_meta_cells(row, columns)) + "\n")
        rows += 1
    return rows


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _close_durably(fh: TextIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def write_projector(
    outdir: str | os.PathLike[str],
    vectors: Iterable[np.ndarray] | np.ndarray,
    meta_rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Sequence[str],
) -> tuple[Path, Path]:
    """Write ``vecs.tsv`` and ``meta.tsv`` in ``outdir``; returns their paths.

    ``vectors``: a matrix, or an iterable of rows and/or 2-D batches (consumed once).
    ``meta_rows``: dicts (read by column name; missing keys are empty) or sequences with one
    value per column. Raises ``ValueError`` (leaving existing files untouched) when the two
    have different row counts.
    """
    if not columns:
        raise ValueError("at least one metadata column is needed")
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    vecs_path, meta_path = folder / VECS_NAME, folder / META_NAME
    tmps = [_tmp_path(vecs_path), _tmp_path(meta_path)]
    try:
        with tmps[0].open("w", encoding="utf-8", newline="\n") as fh:
            n_vecs = _write_vectors(fh, vectors)
            _close_durably(fh)
        with tmps[1].open("w", encoding="utf-8", newline="\n") as fh:
            n_meta = _write_meta(fh, meta_rows, columns)
            _close_durably(fh)
        if n_vecs != n_meta:
            raise ValueError(f"{n_vecs} vectors but {n_meta} metadata rows")
        os.replace(tmps[0], vecs_path)
        os.replace(tmps[1], meta_path)
        fsync_dir(folder)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return vecs_path, meta_path


def _read_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="\n") as fh:
        return [line[:-1] if line.endswith("\n") else line for line in fh]


def read_projector(outdir: str | os.PathLike[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Load ``vecs.tsv`` (as float32, shape (n, d)) and the ``meta.tsv`` rows (header dropped).

    A first metadata line with a tab is the header of a multi-column file; single-column
    files have no header and their cells never contain tabs.
    """
    folder = Path(outdir)
    vec_lines = _read_lines(folder / VECS_NAME)
    values = [[float(x) for x in line.split("\t")] for line in vec_lines]
    vectors = np.array(values, dtype=np.float64).astype(np.float32)
    if not vec_lines:
        vectors = np.zeros((0, 0), dtype=np.float32)
    meta_lines = _read_lines(folder / META_NAME)
    if meta_lines and "\t" in meta_lines[0]:
        meta_lines = meta_lines[1:]
    return vectors, [line.split("\t") for line in meta_lines]
