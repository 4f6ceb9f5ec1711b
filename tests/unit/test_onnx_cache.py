"""ONNX copies of a model: built on first use, kept beside it, rebuilt when its files change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedq.workers.backends import OnnxBackend
from embedq.workers.encoding import Embedder
from embedq.workers.models import ModelError, resolve_path
from embedq.workers.onnx_cache import CACHE, FP32, int8_name, model_key

TEXTS = ["x", "A cat sits on the warm windowsill.", "Revenue rose by twelve percent. " * 9]


def _tiny_model(folder: Path) -> Path:
    """A small sentence-transformers folder in the classic layout (2 layers, mean pooling,
    normalised), written file by file."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "2_Normalize").mkdir()
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_built_on_first_use_beside_the_model_and_equal_to_torch(tiny: Path) -> None:
    onnx = Embedder(str(tiny), device="cpu", precision="fp32")
    assert isinstance(onnx.backend, OnnxBackend)
    assert onnx.backend.path == tiny / CACHE / f"onnx-{model_key(tiny)}" / FP32
    assert (onnx.dim, onnx.max_tokens) == (32, 128)
    torch_vectors = Embedder(str(tiny), "cpu", "fp32", engine="torch").encode_texts(TEXTS)
    vectors = onnx.encode_texts(TEXTS)
    assert (vectors * torch_vectors).sum(axis=1).min() >= 0.99999
    int8 = Embedder(str(tiny), device="cpu", precision="int8")
    assert int8.backend.path == onnx.backend.path.with_name(int8_name())  # type: ignore[attr-defined]
    assert (int8.encode_texts(TEXTS) * vectors).sum(axis=1).min() >= 0.95


def test_a_changed_model_gets_a_new_copy(tiny: Path) -> None:
    before = model_key(tiny)
    Embedder(str(tiny), device="cpu", precision="fp32")
    built = tiny / CACHE / f"onnx-{before}" / FP32
    stamp = built.stat().st_mtime_ns
    Embedder(str(tiny), device="cpu", precision="fp32")
    assert built.stat().st_mtime_ns == stamp  # reused, not rebuilt
    (tiny / "README.md").write_text("changed\n")
    after = model_key(tiny)
    assert after != before
    Embedder(str(tiny), device="cpu", precision="fp32")
    assert (tiny / CACHE / f"onnx-{after}" / FP32).is_file()


def test_int8_refused_where_it_cannot_run(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="int8 needs a local sentence-transformers folder"):
        Embedder(str(tmp_path), device="cpu", precision="int8")
    # fp32 of a plain checkpoint runs on torch, with sentence-transformers' mean pooling.
    plain = Embedder(str(tmp_path), device="cpu", precision="fp32")
    assert plain.model is not None and np.isfinite(plain.encode_texts(TEXTS)).all()
    with pytest.raises(ModelError, match="CPU only"):
        Embedder(None, device="cuda", precision="int8")


def test_the_graph_is_fused_and_copies_of_an_earlier_recipe_are_removed(tiny: Path) -> None:
    import onnx

    directory = tiny / CACHE / f"onnx-{model_key(tiny)}"
    Embedder(str(tiny), device="cpu", precision="fp32")
    ops = {node.op_type for node in onnx.load(str(directory / FP32)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    stale = directory / "model.int8-matmul-channel.onnx"
    stale.write_bytes(b"an earlier recipe")
    (directory / int8_name()).unlink(missing_ok=True)
    Embedder(str(tiny), device="cpu", precision="int8")
    assert (directory / int8_name()).is_file() and not stale.exists()


def test_int8_chosen_by_auto_falls_back_to_fp32_where_it_cannot_be_made(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model without a ``tokenizer.json`` has no ONNX copy: asked for, int8 is refused;
    picked by ``auto`` (a CPU with VNNI and no bf16), the model runs in fp32 on torch."""
    import shutil

    from embedq.workers import models

    plain = tmp_path / "plain"
    shutil.copytree(tiny, plain, ignore=shutil.ignore_patterns(CACHE))
    (plain / "tokenizer.json").unlink()
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: True)
    with pytest.raises(ModelError, match="int8"):
        Embedder(str(plain), device="cpu", precision="int8")
    chosen = Embedder(str(plain), device="cpu", precision="auto")
    assert chosen.precision == "fp32" and not isinstance(chosen.backend, OnnxBackend)
    assert chosen.encode_texts(TEXTS).shape == (3, 32)
    onnx = Embedder(str(tiny), device="cpu", precision="auto")
    assert onnx.precision == "int8" and onnx.backend.path.name == int8_name()  # type: ignore[attr-defined]
