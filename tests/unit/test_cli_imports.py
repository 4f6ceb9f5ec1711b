"""What every ``embedq`` command pays before it runs: the command line's own imports leave out
the libraries that only some commands need (FAISS, torch, transformers, Alembic), so that a
command that only queues work does not load them."""

from __future__ import annotations

from tests.unit.imports import loaded_after

HEAVY = ["faiss", "torch", "transformers", "sentence_transformers", "alembic", "onnxruntime"]


def test_the_command_line_loads_no_index_or_model_library() -> None:
    assert loaded_after("import embedq.api.cli", HEAVY) == []


def test_a_search_module_loads_faiss_only_when_it_searches() -> None:
    code = "import embedq.tasks.search, embedq.storage.catchup, embedq.storage.index_store"
    assert loaded_after(code, ["faiss"]) == []
    code += "\nfrom embedq.storage.index_store import new_index\nnew_index(4)"
    assert loaded_after(code, ["faiss"]) == ["faiss"]
