"""Embedding Projector export: exact float32 round trip, projector header rule, sanitising."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedq.storage.exports import META_NAME, VECS_NAME, read_projector, sanitise, write_projector


def _vectors(n: int = 50, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    special = [1 / 3, -0.0, 1e-38, 3.4e38, 1e-45, -np.pi]  # 1e-45: the smallest subnormal
    vecs[0, : min(dim, 6)] = special[:dim]
    vecs[1] /= np.linalg.norm(vecs[1])
    return vecs


def _mixed(vecs: np.ndarray) -> Iterator[np.ndarray]:
    """Single rows, then batches of various sizes, then an empty batch, as a one-shot stream."""
    yield vecs[0]
    yield vecs[1]
    yield vecs[2:9]
    yield vecs[9:10]
    yield vecs[10:]
    yield vecs[:0]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    vecs = _vectors()
    meta = ({"title": f"doc {i}", "n": i} for i in range(len(vecs)))
    vecs_path, meta_path = write_projector(tmp_path, _mixed(vecs), meta, ["title", "n"])
    assert (vecs_path.name, meta_path.name) == (VECS_NAME, META_NAME)
    loaded, rows = read_projector(tmp_path)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, vecs)
    assert rows == [[f"doc {i}", str(i)] for i in range(len(vecs))]
    lines = vecs_path.read_text().splitlines()
    assert len(lines) == len(vecs) and all(len(x.split("\t")) == 16 for x in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_NAME, VECS_NAME]


def test_random_bit_patterns_round_trip(tmp_path: Path) -> None:
    bits = np.random.default_rng(2).integers(0, 2**32, size=(2000, 8), dtype=np.uint64)
    vecs = bits.astype(np.uint32).view(np.float32)
    vecs[~np.isfinite(vecs)] = 0.0
    write_projector(tmp_path, vecs, ([i] for i in range(2000)), ["id"])
    loaded, _ = read_projector(tmp_path)
    assert np.array_equal(loaded.view(np.uint32), vecs.view(np.uint32))


def test_matrix_input(tmp_path: Path) -> None:
    vecs = np.random.default_rng(1).standard_normal((5000, 3)).astype(np.float32)
    write_projector(tmp_path, vecs, ([str(i)] for i in range(5000)), ["id"])
    loaded, rows = read_projector(tmp_path)
    assert np.array_equal(loaded, vecs) and len(rows) == 5000


def test_single_column_has_no_header(tmp_path: Path) -> None:
    vecs = _vectors(3, 4)
    _, meta_path = write_projector(tmp_path, vecs, [["a"], ["b"], {"label": "c"}], ["label"])
    assert meta_path.read_text() == "a\nb\nc\n"
    assert read_projector(tmp_path)[1] == [["a"], ["b"], ["c"]]


def test_multi_column_has_header_and_values_are_sanitised(tmp_path: Path) -> None:
    vecs = _vectors(3, 4)
    meta: list[dict[str, str] | list[str | None]] = [
        {"title": "tab\there", "source": "line\nbreak\r\nend"},
        ["plain", None],
        {"title": "missing source"},
    ]
    _, meta_path = write_projector(tmp_path, vecs, meta, ["title", "source"])
    lines = meta_path.read_text().split("\n")
    assert lines[0] == "title\tsource"
    assert lines[1:] == ["tab here\tline break  end", "plain\t", "missing source\t", ""]
    _, rows = read_projector(tmp_path)
    assert rows == [["tab here", "line break  end"], ["plain", ""], ["missing source", ""]]
    assert sanitise("a\u2028b\x85c") == "a b c"


def test_mismatched_counts_leave_existing_files(tmp_path: Path) -> None:
    vecs = _vectors(4, 4)
    write_projector(tmp_path, vecs, [[str(i)] for i in range(4)], ["id"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="4 vectors but 3 metadata rows"):
        write_projector(tmp_path, vecs, [["x"]] * 3, ["id"])
    with pytest.raises(ValueError, match="columns"):
        write_projector(tmp_path, vecs, [["x", "y"]] * 4, ["id"])
    bad = vecs.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_projector(tmp_path, bad, [["x"]] * 4, ["id"])
    with pytest.raises(ValueError, match="width"):
        write_projector(tmp_path, [vecs[0], vecs[1, :3]], [["x"]] * 2, ["id"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_empty_export(tmp_path: Path) -> None:
    write_projector(tmp_path / "new", [], [], ["title", "n"])
    loaded, rows = read_projector(tmp_path / "new")
    assert loaded.shape == (0, 0) and rows == []
