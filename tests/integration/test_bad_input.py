"""Bad input through a real ``embedq api`` server: the files of ../shared/data/bad uploaded as
NDJSON, bodies over the size limit, a 50 MB document, hostile collection names, non-UTF-8 and
lone-surrogate bodies, wrong JSON types. Every answer is a 4xx or a per-record error that names
the line; nothing is written outside the data folder and the valid records are indexed."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedq.api.limits import MAX_RECORD_BYTES
from embedq.storage.readers import Record, Rejected
from embedq.tasks.uploads import validate_records
from tests.integration.conftest import clean_env
from tests.services import Process, embedq_process, free_port, wait_http

pytestmark = pytest.mark.integration

MAX_BODY = 4 * 1024 * 1024
NDJSON = {"content-type": "application/x-ndjson"}
JOB_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    env = clean_env(EMBEDQ_DATA_DIR=str(root / "data"), EMBEDQ_MAX_BODY_BYTES=str(MAX_BODY))
    port = free_port()
    proc: Process = embedq_process(
        ["api", "--host", "127.0.0.1", "--port", str(port)], env, root / "server.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        assert "unhandled error on" not in proc.output(), proc.output()[-4000:]


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=300) as http:
        yield http


def new_collection(client: httpx.Client, name: str) -> None:
    response = client.post("/v1/collections", json={"name": name})
    assert response.status_code in (200, 201), response.text


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT:.0f} s")


def upload(client: httpx.Client, name: str, body: Any) -> httpx.Response:
    return client.post(f"/v1/collections/{name}/uploads", content=body, headers=NDJSON)


def finished_upload(client: httpx.Client, name: str, body: Any) -> tuple[dict[str, Any], list]:
    response = upload(client, name, body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    errors = client.get(f"/v1/jobs/{job['id']}/errors", params={"limit": 1000}).json()
    return job, errors["errors"]


def stored_ids(client: httpx.Client, name: str) -> set[str]:
    """Every document id of a small collection (k above its size returns all of them)."""
    response = client.post(f"/v1/collections/{name}/search", json={"query": "text", "k": 1000})
    assert response.status_code == 200, response.text
    return {hit["id"] for hit in response.json()["hits"]}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and p.suffix not in (".db-wal", ".db-shm")}


# ----------------------------------------------------------------- ../shared/data/bad


COVERED = {"mixed.jsonl", "mixed.expected.json", "bom.jsonl", "empty.jsonl", "mixed.csv"}
COVERED |= {"binary.bin"}


def test_every_bad_file_is_covered(shared_data: Path) -> None:
    present = {p.name for p in (shared_data / "bad").iterdir()}
    assert present <= COVERED, f"new files without a test: {sorted(present - COVERED)}"


def test_mixed_jsonl_rejects_each_bad_line_and_indexes_the_rest(
    client: httpx.Client, shared_data: Path
) -> None:
    expected = json.loads((shared_data / "bad" / "mixed.expected.json").read_text())
    new_collection(client, "mixed")
    job, errors = finished_upload(
        client, "mixed", (shared_data / "bad" / "mixed.jsonl").read_bytes()
    )
    assert job["status"] == "succeeded", job
    got = [(e["line"], e["reason"]) for e in errors]
    assert got == [(r["line"], r["reason"]) for r in expected["rejected"]]
    assert job["progress"]["done"] == len(expected["valid_ids"])
    assert stored_ids(client, "mixed") == set(expected["valid_ids"])


def test_a_bom_is_not_part_of_the_first_record(client: httpx.Client, shared_data: Path) -> None:
    new_collection(client, "bom")
    job, errors = finished_upload(client, "bom", (shared_data / "bad" / "bom.jsonl").read_bytes())
    assert job["status"] == "succeeded" and errors == []
    assert stored_ids(client, "bom") == {"bom1"}


def test_an_empty_upload_is_an_empty_job(client: httpx.Client, shared_data: Path) -> None:
    new_collection(client, "empty")
    job, errors = finished_upload(
        client, "empty", (shared_data / "bad" / "empty.jsonl").read_bytes()
    )
    assert job["status"] == "succeeded" and errors == []
    assert job["progress"] == {"total": 0, "done": 0, "failed": 0}


def test_csv_is_refused_as_csv_and_rejected_line_by_line_as_ndjson(
    client: httpx.Client, shared_data: Path
) -> None:
    new_collection(client, "csv")
    data = (shared_data / "bad" / "mixed.csv").read_bytes()
    wrong = client.post(
        "/v1/collections/csv/uploads", content=data, headers={"content-type": "text/csv"}
    )
    assert wrong.status_code == 415
    job, errors = finished_upload(client, "csv", data)
    assert job["status"] == "succeeded"
    assert [(e["line"], e["reason"]) for e in errors] == [(n, "invalid JSON") for n in (1, 2, 3, 4)]


def test_a_binary_upload_is_422_and_leaves_no_file(
    client: httpx.Client, shared_data: Path, root: Path
) -> None:
    new_collection(client, "binary")
    response = upload(client, "binary", (shared_data / "bad" / "binary.bin").read_bytes())
    assert response.status_code == 422
    assert "binary data" in response.json()["detail"]
    assert not list((root / "data" / "uploads").glob("*"))


# ---------------------------------------------------------------------------- sizes


def test_a_50_mb_document_is_a_record_error_and_its_neighbours_are_indexed(
    client: httpx.Client,
) -> None:
    new_collection(client, "huge")
    huge_text = "word " * (10 * 1024 * 1024)  # 50 MiB

    def body() -> Iterator[bytes]:
        yield b'{"id": "before", "text": "The first record is fine."}\n'
        head = b'{"id": "huge", "text": "'
        yield head
        encoded = huge_text.encode()
        for start in range(0, len(encoded), 1 << 20):
            yield encoded[start : start + (1 << 20)]
        yield b'"}\n{"id": "after", "text": "So is the last one."}\n'

    job, errors = finished_upload(client, "huge", body())
    assert job["status"] == "succeeded", job
    size = len(huge_text.encode()) + len(b'{"id": "huge", "text": ""}')
    reason = f"record too large ({size} bytes; at most {MAX_RECORD_BYTES})"
    assert [(e["line"], e.get("id"), e["reason"]) for e in errors] == [(2, "huge", reason)]
    assert stored_ids(client, "huge") == {"before", "after"}


def test_a_json_body_over_the_limit_is_413(client: httpx.Client) -> None:
    doc = {"documents": [{"id": "big", "text": "x" * (MAX_BODY + 10)}]}
    response = client.post("/v1/collections/huge/documents", json=doc)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_chunked_body_growing_past_the_limit_is_413(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"q" * 65536
        yield b'"}'

    response = client.post(
        "/v1/collections/huge/search", content=body(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_records_too_large_for_a_json_request_are_rejected_by_line() -> None:
    big = "é" * (MAX_RECORD_BYTES // 2 + 1)  # two bytes a character in UTF-8
    items = list(validate_records([{"id": "a", "text": "fine"}, {"id": "b", "text": big}]))
    assert isinstance(items[0], Record)
    assert isinstance(items[1], Rejected) and items[1].line == 2 and items[1].id == "b"
    assert items[1].reason.startswith("text too large (")


# -------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "body",
    [{"query": "q", "k": 10**12}, {"query": "q", "k": 1001}, {"query": "q", "k": -1}],
)
def test_huge_or_negative_k_is_422(client: httpx.Client, body: dict[str, Any]) -> None:
    new_collection(client, "mixed")
    assert client.post("/v1/collections/mixed/search", json=body).status_code == 422


def test_k_as_an_overflowing_number_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/v1/collections/mixed/search",
        content=b'{"query": "q", "k": 1e400}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/collections/ghost", None),
        ("POST", "/v1/collections/ghost/search", {"query": "q"}),
        ("POST", "/v1/collections/ghost/documents", {"documents": []}),
        ("POST", "/v1/jobs", {"kind": "cluster", "collection": "ghost", "k": 2}),
    ],
)
def test_unknown_collections_are_404(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert client.request(method, path, json=body).status_code == 404


TRAVERSALS = [
    "/v1/collections/../x",
    "/v1/collections/..%2Fx",
    "/v1/collections/%2e%2e%2fx",
    "/v1/collections/%2e%2e",
    "/v1/collections/..",
    "/v1/collections//etc",
    "/v1/collections/%2Fetc",
    "/v1/collections/a%00b",
    "/v1/collections/..%5C..%5Cx",
    "/v1/collections/%252e%252e%252fx",
]


@pytest.mark.parametrize("suffix", ["", "/search", "/uploads", "/documents"])
@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_in_a_collection_name_is_4xx_and_touches_no_file(
    server: str, root: Path, target: str, suffix: str
) -> None:
    before = files_under(root)
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        method = "GET" if not suffix else "POST"
        ctype = "application/x-ndjson" if suffix == "/uploads" else "application/json"
        body = b'{"id": "a", "text": "b"}\n' if suffix == "/uploads" else b'{"query": "q"}'
        conn.request(method, target + suffix, body=body, headers={"content-type": ctype})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert 400 <= status < 500, status
    assert files_under(root) == before


@pytest.mark.parametrize("name", ["../x", "/etc", "a\x00b", "..%2Fx", "a/b", "x" * 129, "é"])
def test_hostile_names_in_a_body_are_422(client: httpx.Client, root: Path, name: str) -> None:
    before = files_under(root)
    assert client.post("/v1/collections", json={"name": name}).status_code == 422
    response = client.post("/v1/jobs", json={"kind": "index", "collection": name, "documents": []})
    assert response.status_code == 422
    assert files_under(root) == before


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/v1/collections", b'{"name": "caf\xe9"}'),
        ("/v1/collections/mixed/search", b'{"query": "\xff\xfe"}'),
        ("/v1/collections/mixed/documents", b'{"documents": [{"id": "a", "text": "\xc3"}]}'),
        ("/v1/collections/mixed/search", b'{"query": "lone \\ud800 surrogate"}'),
        ("/v1/collections", b'{"name": "ok", "model": "\\udfff"}'),
        ("/v1/jobs", b'{"kind": "embed", "texts": ["\\ud800"]}'),
        ("/v1/collections/mixed/documents", b'{"documents": [{"id": "\\ud800", "text": "t"}]}'),
    ],
)
def test_bodies_that_are_not_valid_unicode_are_422(
    client: httpx.Client, path: str, content: bytes
) -> None:
    new_collection(client, "mixed")
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_a_surrogate_pair_escape_is_fine(client: httpx.Client) -> None:
    new_collection(client, "mixed")
    body = b'{"query": "\\ud83d\\ude00 bees"}'
    response = client.post(
        "/v1/collections/mixed/search", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/collections", {"name": 5}),
        ("/v1/collections", {"name": "ok", "chunk_tokens": "many"}),
        ("/v1/collections", {"name": "ok", "overlap": 1.5}),
        ("/v1/collections", ["ok"]),
        ("/v1/collections/mixed/search", {"query": 5}),
        ("/v1/collections/mixed/search", {"query": "q", "k": True}),
        ("/v1/collections/mixed/search", {"query": "q", "k": "10"}),
        ("/v1/collections/mixed/search", {"query": None}),
        ("/v1/collections/mixed/documents", {"documents": "all of them"}),
        ("/v1/collections/mixed/documents", {"documents": None}),
        ("/v1/jobs", {"kind": 3}),
        ("/v1/jobs", {"kind": "embed", "texts": "not a list"}),
        ("/v1/jobs", {"kind": "cluster", "collection": "mixed", "k": "two"}),
    ],
)
def test_wrong_json_types_are_422(client: httpx.Client, path: str, body: Any) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_a_model_spec_the_filesystem_refuses_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/collections", json={"name": "m", "model": "0" * 300})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "eval_sts", "file": "/etc/passwd"},
        {"kind": "eval_sts", "file": "../../embedq.db"},
        {"kind": "eval_beir", "dir": "/"},
        {"kind": "eval_beir", "dir": "scifact/../../.."},
    ],
)
def test_evaluation_paths_over_http_stay_inside_the_datasets_folder(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "datasets" in response.json()["detail"]


def test_an_evaluation_file_inside_the_datasets_folder_is_read(
    client: httpx.Client, root: Path
) -> None:
    folder = root / "data" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.tsv").write_text("nothing here")
    response = client.post("/v1/jobs", json={"kind": "eval_sts", "file": "pairs.tsv"})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    # The file was found and read: the job fails on its content, not on where it lives.
    assert job["status"] == "failed" and "no such file" not in (job["error"] or ""), job
