"""Which models a request may name, and how many a process keeps loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

import embedq.workers.encoding
from embedq.api.model_policy import check_model
from embedq.tasks.runtime import Runtime
from embedq.tasks.settings import Settings


def test_only_listed_models_may_be_named(tmp_path: Path) -> None:
    plain = Settings(data_dir=tmp_path)
    for spec in (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert check_model(spec, plain) == spec
    with pytest.raises(ValueError, match="EMBEDQ_MODELS"):
        check_model("/etc", plain)
    listed = Settings(data_dir=tmp_path, models="/models/a, org/b", model="org/c")
    for spec in ("/models/a", "org/b", "org/c", "default"):
        assert check_model(spec, listed) == spec
    with pytest.raises(ValueError):
        check_model("/models/other", listed)
    assert check_model("/anything", Settings(data_dir=tmp_path, models="*")) == "/anything"


class _Loaded:
    def __init__(self, spec: str, device: str, precision: str) -> None:
        self.spec = spec


def test_the_model_cache_keeps_the_most_recently_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedq.workers.encoding, "Embedder", _Loaded)
    rt = Runtime(Settings(data_dir=tmp_path, model_cache=2))
    a = rt.embedder("a")
    rt.embedder("b")
    assert rt.embedder("a") is a  # a is now the most recent
    rt.embedder("c")  # evicts b
    assert list(rt._models) == ["a", "c"]
    assert rt.embedder("b") is not None and list(rt._models) == ["c", "b"]
