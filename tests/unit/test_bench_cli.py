"""``python -m bench``: names resolve to modules, imported only when run (the GPU machine
has torch and transformers but neither FAISS nor the service's packages)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.__main__ import BENCHES, TOOLS
from bench.gpu_pack import pack_model
from tests.unit.imports import loaded_after


def test_every_name_is_a_module_with_main() -> None:
    for module in [*BENCHES, *TOOLS.values()]:
        assert callable(importlib.import_module(f"bench.{module}").main)


def test_the_precision_benchmark_needs_no_faiss_or_service_packages() -> None:
    code = "import bench.__main__, bench.precision"
    assert loaded_after(code, ["faiss", "sqlalchemy", "celery", "fastapi"]) == []


def test_unknown_name_prints_usage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nonsense"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0
    assert "usage: python -m bench [throughput|precision" in out.stderr


def test_the_gpu_pack_holds_the_model_in_fp16_without_its_onnx_copies(tmp_path: Path) -> None:
    source = tmp_path / "model"
    (source / ".embedq" / "onnx-0123").mkdir(parents=True)
    (source / ".embedq" / "onnx-0123" / "model.int8.onnx").write_bytes(b"x" * 1000)
    (source / "tokenizer.json").write_text("{}")
    save_file({"w": torch.ones(4), "ids": torch.arange(3)}, str(source / "model.safetensors"))
    pack_model(source, tmp_path / "pack")
    packed = tmp_path / "pack" / "model"
    assert sorted(p.name for p in packed.iterdir()) == ["model.safetensors", "tokenizer.json"]
    tensors = load_file(str(packed / "model.safetensors"))
    assert tensors["w"].dtype == torch.float16 and tensors["ids"].dtype == torch.int64
    assert (tmp_path / "pack" / "__init__.py").exists()
