"""End to end through the ``embedq`` command line on the embedded default (SQLite, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import embedq, ok_json, write_jsonl

TOPICS = {
    "volcano": "Volcanic eruptions in Iceland spread ash clouds that grounded flights in Europe.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "tides": "Tidal power stations turn the rise and fall of the sea into electricity.",
    "chess": "The grandmaster sacrificed her queen to force checkmate in five moves.",
    "bees": "Honeybees perform a waggle dance to tell the hive where flowers are.",
    "rail": "The night train crossed the Alps through a tunnel fifteen kilometres long.",
}


def test_mixed_file_indexes_every_valid_record_and_lists_every_rejected_line(
    env: dict[str, str], shared_data: Path
) -> None:
    expected = json.loads((shared_data / "bad" / "mixed.expected.json").read_text())
    job = ok_json(
        env, "index", str(shared_data / "bad" / "mixed.jsonl"), "-c", "bad", "--json", "-q"
    )
    assert job["status"] == "succeeded"
    assert job["progress"] == {"total": 8, "done": 8, "failed": 0}
    got = sorted((e["line"], e["reason"]) for e in job["errors"])
    assert got == sorted((r["line"], r["reason"]) for r in expected["rejected"])
    # Every valid id is searchable: ask for all of them.
    hits = ok_json(env, "search", "bad", "anything", "-k", "50", "--json")["hits"]
    assert sorted(h["id"] for h in hits) == sorted(expected["valid_ids"])
    listed = ok_json(env, "jobs", "--json")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["next"] is None
    shown = ok_json(env, "jobs", "show", job["id"], "--json")
    assert shown["status"] == "succeeded" and len(shown["errors"]) == len(expected["rejected"])


@pytest.mark.parametrize(
    ("name", "code", "docs"),
    [("bom.jsonl", 0, 1), ("empty.jsonl", 0, 0), ("mixed.csv", 0, None), ("binary.bin", 2, None)],
)
def test_other_bad_files_end_cleanly(
    env: dict[str, str], shared_data: Path, name: str, code: int, docs: int | None
) -> None:
    proc = embedq(env, "index", str(shared_data / "bad" / name), "-c", "bad", "--json", "-q")
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if code:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines == [
            f"embedq: error: {shared_data / 'bad' / name}: not a text file (binary data)"
        ]
        return
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded"
    if docs is not None:
        assert job["progress"]["done"] == docs
    else:
        assert {(e["line"], e["reason"]) for e in job["errors"]} >= {(3, "unterminated quote")}


def test_reindexing_skips_unchanged_and_replaces_changed_documents(
    env: dict[str, str], tmp_path: Path
) -> None:
    docs = [{"id": k, "text": v} for k, v in TOPICS.items()]
    corpus = write_jsonl(tmp_path / "v1.jsonl", docs)
    first = ok_json(env, "index", str(corpus), "-c", "t", "--json", "-q")
    assert first["progress"]["done"] == 6 and first["unchanged"] == 0
    ash = "ash cloud from an Icelandic eruption"
    before = ok_json(env, "search", "t", ash, "--json")["hits"]
    assert before[0]["id"] == "volcano"

    again = ok_json(env, "index", str(corpus), "-c", "t", "--json", "-q")
    assert again["status"] == "succeeded"
    assert again["unchanged"] == 6 and again["progress"]["done"] == 6

    docs[0] = {"id": "volcano", "text": "Glaciers carve deep fjords along the Norwegian coast."}
    changed = ok_json(
        env, "index", str(write_jsonl(tmp_path / "v2.jsonl", docs)), "-c", "t", "--json", "-q"
    )
    assert changed["unchanged"] == 5 and changed["progress"]["done"] == 6
    hits = ok_json(env, "search", "t", "fjords carved by glaciers in Norway", "--json")["hits"]
    assert hits[0]["id"] == "volcano"
    hits = ok_json(env, "search", "t", ash, "--json")["hits"]
    # The old text is gone: only the new chunk of the changed document is left.
    assert len({h["id"] for h in hits}) == len(hits) == 6
    score = {h["id"]: h["score"] for h in hits}["volcano"]
    assert score < before[0]["score"] - 0.2


def test_batch_queries_print_one_json_line_per_query(env: dict[str, str], tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": k, "text": v} for k, v in TOPICS.items()])
    ok_json(env, "index", str(corpus), "-c", "t", "--json", "-q")
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"_id": "q1", "text": "bees dancing"},
            {"_id": "q2", "text": "a train in a mountain tunnel"},
        ],
    )
    proc = embedq(env, "search", "t", "--queries", str(queries), "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [ln["query_id"] for ln in lines] == ["q1", "q2"]
    assert [ln["hits"][0]["id"] for ln in lines] == ["bees", "rail"]
    assert all(len(ln["hits"]) == 3 and set(ln["hits"][0]) == {"id", "score"} for ln in lines)
    scores = [h["score"] for h in lines[0]["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_user_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    proc = embedq(env, "search", "nothing-here", "query")
    data = env["EMBEDQ_DATA_DIR"]
    assert proc.returncode == 2 and proc.stderr.startswith("embedq: error: no embedq database")
    assert len(proc.stderr.strip().splitlines()) == 1 and data in proc.stderr
    proc = embedq(env, "index", str(tmp_path / "missing.jsonl"), "-c", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = embedq(env, "index", str(tmp_path), "-c", "../escape")
    assert proc.returncode == 2 and "invalid collection name" in proc.stderr


def test_stdin_corpus(env: dict[str, str]) -> None:
    data = "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TOPICS.items())
    proc = embedq(env, "index", "-", "-c", "s", "--json", "-q", stdin=data.encode())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["progress"]["done"] == 6


def test_resume_runs_the_batches_a_lost_queue_dropped(env: dict[str, str], tmp_path: Path) -> None:
    from embedq.storage.readers import read_corpus
    from embedq.storage.schema import ensure_ready
    from embedq.tasks.collection_setup import CollectionSpec, ensure_collection
    from embedq.tasks.indexing import ingest
    from embedq.tasks.producer import start_index_job
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": k, "text": v} for k, v in TOPICS.items()])
    rt = Runtime(Settings(data_dir=Path(env["EMBEDQ_DATA_DIR"])))
    ensure_ready(rt.sessions.kw["bind"])
    job_id = start_index_job(rt, ensure_collection(rt, CollectionSpec("r")), {})
    lost: list[object] = []  # batches handed to a queue that then lost them
    ingest(rt, job_id, read_corpus([str(corpus)]), lost.append, batch_docs=2)
    assert len(lost) == 3
    assert ok_json(env, "jobs", "show", job_id, "--json")["status"] == "running"

    report = ok_json(env, "jobs", "resume", "--json")
    assert report == [{"id": job_id, "requeued": 3, "sealed": True, "finished": True}]
    job = ok_json(env, "jobs", "show", job_id, "--json")
    assert job["status"] == "succeeded" and job["progress"]["done"] == 6
    hits = ok_json(env, "search", "r", "honeybee waggle dance", "--json")["hits"]
    assert hits[0]["id"] == "bees"
    assert ok_json(env, "jobs", "resume", "--json") == []
