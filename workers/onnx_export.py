"""Export a sentence-transformers model to ONNX (fp32) and quantise it to int8 (needs torch)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from embedq.workers.batching import pad_batch
from embedq.workers.models import ModelError

log = logging.getLogger(__name__)
PROBES = (
    "x",
    "A cat sits on the warm windowsill.",
    "Quarterly revenue rose by twelve percent, driven by demand in overseas markets. " * 6,
)
"""Texts the export is checked on: other batch sizes and widths than the traced ones."""

EXACT = 0.99999
"""Least cosine between the fp32 export and torch on the probe texts; below it, refused."""


def _wrapper(model: Any, token_types: bool) -> Any:
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            names = ["input_ids", "attention_mask", "token_type_ids"][: len(inputs)]
            return self.model(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    return Pipeline().eval()


def _export_file(model: Any, token_types: bool, target: Path) -> None:
    import torch

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    ids = torch.full((2, 16), 1000, dtype=torch.long)
    inputs = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if token_types else ())
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches
        torch.onnx.export(
            _wrapper(model, token_types),
            inputs,
            str(target),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _check(model: Any, token_types: bool, path: Path) -> float:
    """Least cosine between the export and torch on the probe texts."""
    import onnxruntime as ort
    import torch

    tokenizer = model.tokenizer
    enc = tokenizer(list(PROBES), truncation=True, max_length=model.max_seq_length)
    ids, mask = pad_batch(enc["input_ids"], tokenizer.pad_token_id or 0)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        feeds["token_type_ids"] = np.zeros_like(ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, feeds)[0]
    with torch.no_grad():
        ref = model({k: torch.from_numpy(v) for k, v in feeds.items()})["sentence_embedding"]
    ref = ref.float().numpy()
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min())


FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}
"""Model types whose attention ONNX Runtime's BERT optimiser recognises."""


def _load(folder: Path) -> Any:
    """The model with eager attention where it has it: the exported graph then has the
    classic attention pattern that ONNX Runtime fuses (the SDPA export is not fused, and ran
    at 0.75 of the fused one's speed in fp32 and 0.63 in int8; BENCHMARKS.md)."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(
            str(folder),
            device="cpu",
            local_files_only=True,
            model_kwargs={"attn_implementation": "eager"},
        )
    except (TypeError, ValueError):
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return model.float().eval()


def _fuse(model: Any, path: Path) -> bool:
    """Fuse attention, layer norms and GELUs in place (ONNX Runtime's transformer optimiser);
    False when the model is of a kind it does not know or the fused graph changes results."""
    config = getattr(model[0], "auto_model", None)
    config = getattr(config, "config", None)
    if config is None or getattr(config, "model_type", None) not in FUSABLE:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    fused = path.with_name(path.name + ".fused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = optimize_model(
                str(path),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=1,
            )
            optimizer.save_model_to_file(str(fused))
        token_types = "token_type_ids" in model.tokenizer.model_input_names
        if _check(model, token_types, fused) < EXACT:
            log.warning("the fused ONNX graph of %s differs from torch: left unfused", path)
            return False
        os.replace(fused, path)
        return True
    except Exception as exc:  # the optimiser is best effort: the plain export still works
        log.warning("could not fuse the ONNX graph %s: %s", path, exc)
        return False
    finally:
        fused.unlink(missing_ok=True)


def export(folder: Path, target: Path) -> None:
    """Write the fp32 ONNX export of the model in ``folder`` to ``target``, fused where ONNX
    Runtime can fuse it, checked against torch on texts of other shapes than the traced ones."""
    model = _load(folder)
    token_types = "token_type_ids" in model.tokenizer.model_input_names
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        _export_file(model, token_types, tmp)
        cosine = _check(model, token_types, tmp)
        if cosine < EXACT:
            raise ModelError(
                f"the ONNX export of {folder} differs from torch (cosine {cosine:.6f})"
            )
        fused = _fuse(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot export {folder} to ONNX: {exc}") from exc
    log.info("exported %s to %s (cosine to torch %.7f, fused: %s)", folder, target, cosine, fused)


def quantise(source: Path, target: Path, bits: int = 7) -> None:
    """int8 weights, activations quantised on the fly (ONNX Runtime dynamic quantisation).

    Only the weights of MatMul and fused Attention, per output channel; in 7 bits
    (``bits=7``) for CPUs without VNNI (AVX2), whose 8-bit products saturate, in 8 on CPUs
    with it. On 67 SciFact texts the cosine to fp32 was min 0.981 mean 0.994 in 7 bits,
    against min 0.900 mean 0.936 with the quantiser's defaults (every op, per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".int8-", suffix=".onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            reduce_range=bits < 8,
            # Fused operators are outside ONNX's shape inference: their outputs are float.
            extra_options={"DefaultTensorType": 1},
        )
        os.chmod(tmp, 0o644)  # readable like the model beside it, not only by its builder
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
