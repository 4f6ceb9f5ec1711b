"""Models load from safetensors only: a checkpoint that exists only as a pickled
``pytorch_model.bin`` (which can run code when unpickled) is refused by every loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from embedq.workers.encoding import Embedder
from embedq.workers.models import ModelError, resolve_path
from embedq.workers.pooling import HFEncoder
from embedq.workers.zeroshot import NLIClassifier


def _pickled_bert(folder: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(None))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_a_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    folder = str(_pickled_bert(tmp_path / "pickled"))
    with pytest.raises(ModelError):
        Embedder(folder, device="cpu", precision="fp32")
    with pytest.raises((ModelError, OSError, ValueError)):
        HFEncoder(folder, device="cpu", precision="fp32").encode(["a text"], "mean")
    with pytest.raises(ModelError):
        NLIClassifier(folder, device="cpu")


def test_the_bundled_model_loads_from_safetensors() -> None:
    assert Embedder(None, device="cpu", precision="fp32").dim == 384
