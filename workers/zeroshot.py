"""Zero-shot classification of texts into caller-given labels, with two backends.

``classify_nli`` scores each (text, hypothesis) pair with a natural-language-inference
checkpoint: the hypothesis is the template filled with a label, and the score is read from the
entailment logit. Its outputs are model probabilities.

``classify_embedding`` uses the sentence embedder already loaded for indexing: the cosine
between a text and each filled template, turned into scores with a temperature. Its outputs are
calibrated similarities, not NLI probabilities: they rank labels well but their absolute values
depend on the embedding model (see ``EMBED_THRESHOLD``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from embedq.workers.constants import DEFAULT_TEMPLATE
from embedq.workers.models import MAX_WINDOW, ModelError, choose_device, offline, resolve_path
from embedq.workers.templates import check_template, fill

Scores = list[list[tuple[str, float]]]

# Multi-label calibration for the embedding backend, tuned on the bundled all-MiniLM-L6-v2
# with the default template: on a probe set of 30 short texts over 6 topics, the cosine to the
# right label had median 0.23 (minimum 0.13) and to a wrong label median 0.01 (95th percentile
# 0.09). A threshold of 0.12 sits between the two (all right labels above it, 2.7% of wrong
# ones) and a temperature of 0.05 maps those medians to about 0.9 and 0.1. Other models have
# other cosine scales: pass ``threshold`` for them.
EMBED_THRESHOLD = 0.12
EMBED_TEMPERATURE = 0.05


class TextEncoder(Protocol):
    """Anything that embeds texts to L2-normalised rows (``embedq.workers.encoding.Embedder``)."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_inputs(labels: Sequence[str], template: str) -> list[str]:
    check_template(template)
    names = [str(label) for label in labels]
    if not names:
        raise ValueError("at least one label is needed")
    if len(set(names)) != len(names):
        raise ValueError("labels must be distinct")
    return names


def _ranked(labels: list[str], scores: np.ndarray) -> Scores:
    """Per row, (label, score) pairs sorted by score, highest first (stable on ties)."""
    out: Scores = []
    for row in scores:
        order = np.argsort(-row, kind="stable")
        out.append([(labels[j], float(row[j])) for j in order])
    return out


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# --- NLI backend -------------------------------------------------------------------------


def _normalise_label(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name.lower()).strip("_")


def _find_label(id2label: Mapping[Any, str], stem: str) -> int | None:
    """The one index whose label contains ``stem``, negated labels (``not_...``) excluded."""
    hits = []
    for idx, name in id2label.items():
        norm = _normalise_label(str(name))
        if stem in norm and not norm.startswith(("not_", "non_", "no_")):
            hits.append(int(idx))
    if len(hits) > 1:
        raise ValueError(f"several labels match {stem!r} in id2label {dict(id2label)}")
    return hits[0] if hits else None


@dataclass(frozen=True)
class NLILabels:
    """Where the entailment (and, if any, contradiction) logits sit in the model's output."""

    entailment: int
    contradiction: int | None

    @classmethod
    def from_config(cls, id2label: Mapping[Any, str]) -> NLILabels:
        entail = _find_label(id2label, "entail")
        if entail is None:
            raise ValueError(
                "not an NLI checkpoint: no entailment label in config.id2label "
                f"{dict(id2label)}; zero-shot classification needs a model trained on NLI"
            )
        return cls(entailment=entail, contradiction=_find_label(id2label, "contradict"))

    def single_label(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` (texts, labels, classes) -> softmax over labels of the entailment logit."""
        return _softmax(logits[:, :, self.entailment], axis=1)

    def multi_label(self, logits: np.ndarray) -> np.ndarray:
        """Each label alone: P(entailment) against contradiction (or against all classes)."""
        if self.contradiction is not None:
            logits = logits[:, :, [self.contradiction, self.entailment]]
            return _softmax(logits, axis=2)[:, :, 1]
        return _softmax(logits, axis=2)[:, :, self.entailment]


class NLIClassifier:
    """An ``AutoModelForSequenceClassification`` NLI checkpoint, loaded once, in fp32."""

    def __init__(self, spec: str, device: str = "auto") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_path(spec)
        self.device = choose_device(device)
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=offline())
            model = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=offline(), use_safetensors=True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load NLI model {spec!r}: {exc}") from exc
        self.labels = NLILabels.from_config(model.config.id2label)
        self.model: Any = model.to(self.device).eval()
        positions = getattr(model.config, "max_position_embeddings", MAX_WINDOW)
        self.max_tokens = min(self.tokenizer.model_max_length, positions, MAX_WINDOW)

    @torch.inference_mode()
    def pair_logits(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """Logits (pairs, classes) for one batch; only the premise is truncated."""
        enc = self.tokenizer(
            list(premises),
            list(hypotheses),
            truncation="only_first",
            max_length=self.max_tokens,
            padding=True,
            return_tensors="pt",
        )
        out = self.model(**{k: v.to(self.device) for k, v in enc.items()})
        return out.logits.float().cpu().numpy()

    def logits(
        self, texts: Sequence[str], labels: Sequence[str], template: str, batch_size: int
    ) -> np.ndarray:
        """Logits (texts, labels, classes) for every text against every filled template."""
        hypotheses = [fill(template, label) for label in labels]
        pairs = [(t, h) for t in texts for h in hypotheses]
        rows = []
        for start in range(0, len(pairs), max(1, batch_size)):
            chunk = pairs[start : start + max(1, batch_size)]
            rows.append(self.pair_logits([p for p, _ in chunk], [h for _, h in chunk]))
        flat = np.concatenate(rows, axis=0).astype(np.float64)
        return flat.reshape(len(texts), len(labels), -1)

    def classify(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        template: str = DEFAULT_TEMPLATE,
        multi_label: bool = False,
        batch_size: int = 16,
    ) -> Scores:
        names = _check_inputs(labels, template)
        if not texts:
            return []
        logits = self.logits(texts, names, template, batch_size)
        if multi_label:
            return _ranked(names, self.labels.multi_label(logits))
        return _ranked(names, self.labels.single_label(logits))


def classify_nli(
    model_dir_or_spec: str,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
    batch_size: int = 16,
) -> Scores:
    """Zero-shot labels from an NLI checkpoint; per text, (label, probability) best first.

    Single-label: softmax over the labels of the entailment logits (scores sum to 1).
    Multi-label: per label, softmax over [contradiction, entailment] (over all classes when the
    model has no contradiction label), giving an independent P(entailment) in (0, 1).
    Loads the model on every call; keep an ``NLIClassifier`` to reuse it.
    """
    _check_inputs(labels, template)
    classifier = NLIClassifier(model_dir_or_spec)
    return classifier.classify(
        texts, labels, template=template, multi_label=multi_label, batch_size=batch_size
    )


# --- Embedding backend -------------------------------------------------------------------


def classify_embedding(
    embedder: TextEncoder,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
    temperature: float = EMBED_TEMPERATURE,
    threshold: float = EMBED_THRESHOLD,
) -> Scores:
    """Zero-shot labels from embedding similarity; per text, (label, score) best first.

    Single-label: ``softmax(cos / temperature)`` over the labels (scores sum to 1).
    Multi-label: ``sigmoid((cos - threshold) / temperature)`` per label, in (0, 1); 0.5 means
    a cosine equal to ``threshold``. These are calibrated similarities, not NLI probabilities;
    the default ``threshold`` is tuned for the bundled model (see ``EMBED_THRESHOLD``).
    """
    names = _check_inputs(labels, template)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not texts:
        return []
    text_vecs = np.asarray(embedder.encode_texts(list(texts)), dtype=np.float64)
    label_vecs = np.asarray(
        embedder.encode_texts([fill(template, n) for n in names]), dtype=np.float64
    )
    cos = text_vecs @ label_vecs.T
    if multi_label:
        scores = 1.0 / (1.0 + np.exp(-(cos - threshold) / temperature))
    else:
        scores = _softmax(cos / temperature, axis=1)
    return _ranked(names, scores)
