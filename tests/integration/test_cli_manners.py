"""The CLI's manners, run as a user runs it: closed pipes, read-only commands in the wrong
folder, unknown collections, blank queries, tables, stdin text and the progress bar."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, clean_env, embedq, ok_json, write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A data folder with one 100-document collection, indexed with the bar on."""
    tmp = tmp_path_factory.mktemp("manners")
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp / "data"))
    docs = [{"id": f"d{i:03d}", "text": f"note {i} about topic {i % 7}"} for i in range(100)]
    corpus = write_jsonl(tmp / "hundred.jsonl", docs)
    proc = embedq(env, "index", str(corpus), "--collection", "hundred")
    assert proc.returncode == 0, proc.stderr
    env["BAR"] = proc.stderr
    return env


def test_the_bar_of_a_finished_job_ends_at_its_total(indexed: dict[str, str]) -> None:
    frames = [f for f in re.split(r"[\r\n]", indexed["BAR"]) if "indexing hundred" in f]
    assert frames, indexed["BAR"]
    counts = [re.search(r"(\d+)/(\d+)", f) for f in frames]
    pairs = [(int(m[1]), int(m[2])) for m in counts if m]
    assert pairs[-1] == (100, 100), frames[-3:]
    # The total is known from the start and never moves (no "0doc", no growing total).
    assert {total for _, total in pairs} == {100}, pairs


def _closed_reader(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader has already gone: every write fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedq.api.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(120)
    return subprocess.CompletedProcess(args, proc.returncode, b"", err)


def test_quiet_on_a_closed_pipe(indexed: dict[str, str]) -> None:
    for args in (("jobs", "--json"), ("jobs",), ("search", "hundred", "topic 3", "-k", "50")):
        done = _closed_reader(indexed, *args)
        assert done.stderr == b"", (args, done.stderr.decode())
        assert done.returncode == 141, args
    # As a user types it, several times over: head takes 5 bytes and leaves.
    for _ in range(5):
        shell = subprocess.run(
            f"{sys.executable} -m embedq.api.cli jobs --json | head -c 5",
            shell=True,
            env=indexed,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shell.stdout == '{"job' and shell.stderr == "", shell.stderr


def test_read_only_commands_create_nothing(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere" / "embedq-data"
    env = clean_env(EMBEDQ_DATA_DIR=str(data))
    for args in (
        ("search", "demo", "x"),
        ("jobs",),
        ("jobs", "show", "abc"),
        ("keys", "list"),
        ("cluster", "demo", "--k", "2"),
        ("export", "projector", "demo", str(tmp_path / "out")),
    ):
        proc = embedq(env, *args)
        assert proc.returncode == 2, args
        assert str(data) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not data.exists() and not (tmp_path / "out").exists()


def test_unknown_collection_names_the_data_folder_and_the_collections(
    indexed: dict[str, str],
) -> None:
    for args in (("search", "demo", "x"), ("cluster", "demo", "--k", "2")):
        proc = embedq(indexed, *args)
        assert proc.returncode == 2
        line = proc.stderr.strip()
        assert line.startswith("embedq: error: no collection named 'demo'"), line
        assert indexed["EMBEDQ_DATA_DIR"] in line and "collections there: hundred" in line


def test_blank_queries_are_refused(indexed: dict[str, str], tmp_path: Path) -> None:
    proc = embedq(indexed, "search", "hundred", "   ")
    assert proc.returncode == 2 and "blank" in proc.stderr and proc.stdout == ""
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": ""}])
    proc = embedq(indexed, "search", "hundred", "--queries", str(queries), "--json")
    assert proc.returncode == 2 and f"{queries}:2: query 'b' is blank" in proc.stderr


def test_tables_have_headers(indexed: dict[str, str]) -> None:
    lines = embedq(indexed, "jobs").stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATUS", "COLLECTION", "DONE", "CREATED"]
    assert lines[1].split()[1:5] == ["index", "succeeded", "hundred", "100/100"]


def test_plain_text_queries_file_runs_every_query_in_one_process(
    indexed: dict[str, str], tmp_path: Path
) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("topic 3\n\nnote 42\n", encoding="utf-8")
    proc = embedq(indexed, "search", "hundred", "--queries", str(queries), "-k", "2")
    assert proc.returncode == 0, proc.stderr
    heads = [ln for ln in proc.stdout.splitlines() if ln.startswith("# ")]
    assert heads == ["# 1: topic 3", "# 3: note 42"]


def test_text_from_stdin_keeps_each_piped_document(tmp_path: Path) -> None:
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"))
    args = ("index", "-", "--format", "text", "-c", "notes", "--json", "-q")
    first = json.loads(embedq(env, *args, stdin=b"The first note is about trains.").stdout)
    second = json.loads(embedq(env, *args, stdin=b"The second is about bread.").stdout)
    again = json.loads(embedq(env, *args, stdin=b"The second is about bread.").stdout)
    assert first["progress"]["done"] == 1 and second["progress"]["done"] == 1
    assert again["unchanged"] == 1
    named = embedq(env, *args, "--id", "my-note", stdin=b"Named note.")
    assert named.returncode == 0, named.stderr
    hits = ok_json(env, "search", "notes", "note", "-k", "10", "--json")["hits"]
    ids = {h["id"] for h in hits}
    assert len(ids) == 3 and "my-note" in ids and all(i != "-" for i in ids)


def test_export_onto_a_file_says_so(indexed: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("mine", encoding="utf-8")
    proc = embedq(indexed, "export", "projector", "hundred", str(target))
    assert proc.returncode == 2
    assert "is a file" in proc.stderr and "Errno" not in proc.stderr
    assert target.read_text(encoding="utf-8") == "mine"
