"""A model's shape read from its folder's files must equal what the loaded model says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedq.workers.encoding import Embedder
from embedq.workers.models import resolve_path
from embedq.workers.shape import ModelShape, read_shape


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The bundled model's configuration and tokenizer, without its weights."""
    source = Path(resolve_path(None))
    copy = tmp_path / "model"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return copy


def edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_bundled_model_shape_matches_the_loaded_model() -> None:
    shape = read_shape(None)
    embedder = Embedder(None, device="cpu", precision="fp32")
    chunker = embedder.chunker()
    assert shape == ModelShape(embedder.dim, embedder.max_tokens, chunker.special)
    assert shape == ModelShape(384, 256, 2)


def test_a_folder_is_read_without_weights(folder: Path) -> None:
    assert read_shape(str(folder)) == ModelShape(384, 256, 2)
    edit(folder / "sentence_bert_config.json", max_seq_length=1024)
    assert read_shape(str(folder)) == ModelShape(384, 512, 2)  # the position table bounds it


def test_unusual_folders_are_left_to_the_loaded_model(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, dense]))
    assert read_shape(str(folder)) is None
    (folder / "modules.json").write_text(json.dumps(modules))
    edit(folder / "1_Pooling" / "config.json", pooling_mode_max_tokens=True)  # two modes
    assert read_shape(str(folder)) is None
    edit(folder / "1_Pooling" / "config.json", pooling_mode_max_tokens=False)
    edit(folder / "sentence_bert_config.json", max_seq_length=None)
    assert read_shape(str(folder)) is None
    (folder / "sentence_bert_config.json").unlink()
    assert read_shape(str(folder)) is None


def test_hub_ids_and_missing_folders_give_none(tmp_path: Path) -> None:
    assert read_shape("someone/some-model") is None
    assert read_shape(str(tmp_path / "missing")) is None
