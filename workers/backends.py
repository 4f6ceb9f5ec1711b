"""Forward passes: padded token id arrays in, sentence vectors out (float32, one per row).

``TorchBackend`` runs the sentence-transformers model (CUDA, bf16/fp16, or where no ONNX copy
can be made); ``OnnxBackend`` runs an ONNX copy of it with ONNX Runtime (CPU fp32 and int8)
and imports neither torch nor transformers.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    token_types: bool

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence vectors (not yet normalised) of one padded batch."""
        ...


class TorchBackend:
    """A loaded ``SentenceTransformer``; batches go through pinned memory on CUDA."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device
        first = model[0]
        transformer = getattr(first, "auto_model", None) or first.model
        self.token_types = "token_type_ids" in model.tokenizer.model_input_names and _accepts(
            transformer, "token_type_ids"
        )
        self._pin = device.startswith("cuda")

    def _tensor(self, array: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(array)
        if self._pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def features(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        """The model's input tensors on its device."""
        import torch

        features = {"input_ids": self._tensor(ids), "attention_mask": self._tensor(mask)}
        if self.token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        return features

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            emb = self.model(self.features(ids, mask))["sentence_embedding"]
            return emb.float().cpu().numpy()


class OnnxBackend:
    """An ONNX export of the whole sentence-transformers pipeline, on ONNX Runtime's CPU."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Idle threads that spin steal the cores of a shared CPU (other workers, the API).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        self.token_types = "token_type_ids" in names

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


def _accepts(model: Any, name: str) -> bool:
    """Whether the model's forward takes the argument ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True
