"""The HTTP API as a client sees it: a real ``embedq api`` server on the embedded default.

No broker is configured, so the server runs index jobs itself in the background and the
tests poll them, as a client would.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedq.storage.readers import Record, read_corpus, record_from_object
from tests.integration.conftest import ROOT, clean_env

START_TIMEOUT = 120.0
JOB_TIMEOUT = 180.0

TOPICS = {
    "volcano": "Volcanic eruptions in Iceland spread ash clouds that grounded flights in Europe.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "tides": "Tidal power stations turn the rise and fall of the sea into electricity.",
    "chess": "The grandmaster sacrificed her queen to force checkmate in five moves.",
    "bees": "Honeybees perform a waggle dance to tell the hive where the flowers are.",
    "rail": "The night train crossed the Alps through a tunnel fifteen kilometres long.",
    "violin": "A luthier carves the spruce top of a violin and varnishes it by hand.",
    "coral": "Coral reefs bleach when warm ocean water drives out their symbiotic algae.",
    "tax": "The city raised property taxes to pay for road repairs and street lighting.",
    "marathon": "She ran the marathon in under three hours after months of interval training.",
    "vaccine": "The vaccine trains the immune system to recognise the virus's spike protein.",
    "jupiter": "The telescope photographed Jupiter's Great Red Spot and four of its moons.",
    "coffee": "Espresso is brewed by forcing hot water through finely ground coffee beans.",
    "glacier": "Glaciers carved deep fjords along the Norwegian coast during the ice age.",
    "compiler": "The compiler turns source code into machine instructions and reports errors.",
    "origami": "Origami artists fold a single square of paper into cranes without cutting it.",
    "surfing": "Surfers wait beyond the breakers for a large wave to ride back to the beach.",
    "election": "Voters queued at polling stations to elect a new parliament on Sunday.",
    "cheese": "Cheesemakers age wheels of cheddar in cool caves for a year or more.",
    "owls": "Owls hunt mice at night, hearing them move beneath the snow.",
}
QUERIES = {
    "which insects dance to share where food is": "bees",
    "a long railway tunnel under the mountains": "rail",
    "making an espresso": "coffee",
}
# Request positions (1-based) of the records the server must reject, and why.
MALFORMED = [({"id": "no-text"}, "missing text"), ("just a string", "not an object")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"embedq api exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"embedq api did not answer within {START_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "data"


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[str]:
    """The base URL of an ``embedq api`` process on a free port, stopped afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = data_dir.parent / "server.log"
    env = clean_env(EMBEDQ_DATA_DIR=str(data_dir))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedq.api.cli",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_up(proc, url, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120) as http:
        yield http


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT}s")


def create(client: httpx.Client, name: str, **settings: Any) -> httpx.Response:
    return client.post("/v1/collections", json={"name": name, **settings})


def top_ids(client: httpx.Client, name: str, query: str, k: int = 10) -> list[str]:
    response = client.post(f"/v1/collections/{name}/search", json={"query": query, "k": k})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


def index_documents(client: httpx.Client, name: str, docs: list[Any]) -> dict[str, Any]:
    response = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    return wait_for_job(client, job_id)


@pytest.fixture(scope="module")
def topics(client: httpx.Client) -> dict[str, Any]:
    """Collection ``topics``: the documents of TOPICS plus the MALFORMED records after them."""
    assert create(client, "topics").status_code in (200, 201)
    docs: list[Any] = [{"id": k, "text": v} for k, v in TOPICS.items()]
    docs += [record for record, _ in MALFORMED]
    return index_documents(client, "topics", docs)


# ---------------------------------------------------------------------------------- server


def test_health_and_documentation_are_served(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/documents",
        "/v1/collections/{name}/documents/{doc_id}",
        "/v1/collections/{name}/uploads",
        "/v1/collections/{name}/search",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/errors",
        "/v1/jobs/{job_id}/result",
    ):
        assert path in spec["paths"], path


def test_an_idle_connection_stays_open_longer_than_a_clients_keep_alive_expiry(
    server: str,
) -> None:
    """httpx drops an idle pooled connection after 5 s; a server that closed it at the same 5 s
    would race a client reusing it, whose request then fails with a read error."""
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() and conn.sock is not None
        first = conn.sock
        time.sleep(6)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
        assert conn.sock is first, "the connection was opened again"
    finally:
        conn.close()


# ----------------------------------------------------------------------------- collections


def test_creating_a_collection_twice_is_fine_but_other_settings_conflict(
    client: httpx.Client,
) -> None:
    first = create(client, "settings", chunk_tokens=128, overlap=16)
    assert first.status_code == 201, first.text
    view = first.json()
    assert view["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (view["dim"], view["chunk_tokens"], view["overlap"]) == (384, 128, 16)
    assert (view["metric"], view["index"]) == ("cosine", "Flat")
    assert (view["documents"], view["chunks"], view["indexed"]) == (0, 0, 0)

    again = create(client, "settings", chunk_tokens=128, overlap=16)
    assert again.status_code == 200 and again.json() == view
    assert create(client, "settings").status_code == 200

    conflict = create(client, "settings", chunk_tokens=64)
    assert conflict.status_code == 409
    assert "chunk_tokens=128, not 64" in conflict.json()["detail"]
    assert create(client, "settings", index="HNSW32,Flat").status_code == 409


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "../x"},
        {"name": ".hidden"},
        {"name": "a..b"},
        {"name": ""},
        {"name": "ok", "metric": "l2"},
        {"name": "ok", "chunk_tokens": 0},
        {"name": "ok", "chunk_tokens": 4096},
        {"name": "ok", "unknown": 1},
        {"name": "ok", "index": "NotAnIndex"},
    ],
)
def test_bad_collection_settings_are_422(client: httpx.Client, settings: dict[str, Any]) -> None:
    response = client.post("/v1/collections", json=settings)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert client.get("/v1/collections/ok").status_code == 404


def test_collection_counts_after_indexing(client: httpx.Client, topics: dict[str, Any]) -> None:
    view = client.get("/v1/collections/topics").json()
    # Every document is short: one window each, all in the published index.
    assert (view["documents"], view["chunks"], view["indexed"]) == (20, 20, 20)


# ------------------------------------------------------------------------------------ jobs


def test_index_job_succeeds_and_lists_rejected_records(
    client: httpx.Client, topics: dict[str, Any]
) -> None:
    assert topics["status"] == "succeeded", topics
    assert topics["kind"] == "index" and topics["collection"] == "topics"
    assert topics["progress"] == {"total": 20, "done": 20, "failed": 0}
    assert topics["rejected"] == len(MALFORMED)

    errors = client.get(f"/v1/jobs/{topics['id']}/errors").json()
    assert errors["total"] == len(MALFORMED)
    got = [(e["line"], e["reason"]) for e in errors["errors"]]
    first_bad = len(TOPICS) + 1
    assert got == [(first_bad + i, reason) for i, (_, reason) in enumerate(MALFORMED)]
    assert errors["errors"][0]["id"] == "no-text"

    page = client.get(f"/v1/jobs/{topics['id']}/errors", params={"limit": 1, "offset": 1})
    assert page.json() == {"errors": errors["errors"][1:], "total": len(MALFORMED)}

    result = client.get(f"/v1/jobs/{topics['id']}/result")
    assert result.status_code == 200
    assert result.json()["status"] == "succeeded"
    assert result.json()["result"] == {"documents": 20, "unchanged": 0}


def test_jobs_route_runs_index_jobs_and_refuses_unknown_kinds(client: httpx.Client) -> None:
    assert create(client, "via-jobs").status_code == 201
    docs = [{"id": "owls", "text": TOPICS["owls"], "title": "Birds", "meta": {"lang": "en"}}]
    response = client.post(
        "/v1/jobs", json={"kind": "index", "collection": "via-jobs", "documents": docs}
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded" and job["progress"]["done"] == 1
    assert top_ids(client, "via-jobs", "nocturnal birds hunting") == ["owls"]

    unknown = client.post("/v1/jobs", json={"kind": "teleport"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == (
        "unknown job kind 'teleport'; supported: "
        "cluster, embed, eval_beir, eval_sts, export, index, words, zero_shot"
    )
    missing = client.post("/v1/jobs", json={"kind": "index", "collection": "via-jobs"})
    assert missing.status_code == 422
    assert client.post("/v1/jobs", json={"collection": "x"}).status_code == 422
    gone = client.post("/v1/jobs", json={"kind": "index", "collection": "nope", "documents": []})
    assert gone.status_code == 404


def test_resubmitting_unchanged_documents_skips_them(
    client: httpx.Client, topics: dict[str, Any]
) -> None:
    docs = [{"id": k, "text": v} for k, v in list(TOPICS.items())[:3]]
    job = index_documents(client, "topics", docs)
    assert job["status"] == "succeeded"
    assert job["unchanged"] == 3 and job["progress"]["done"] == 3


# ---------------------------------------------------------------------------------- search


@pytest.mark.parametrize(("query", "expected"), list(QUERIES.items()))
def test_search_finds_the_matching_document_first(
    client: httpx.Client, topics: dict[str, Any], query: str, expected: str
) -> None:
    response = client.post("/v1/collections/topics/search", json={"query": query, "k": 5})
    hits = response.json()["hits"]
    assert len(hits) == 5
    assert hits[0]["id"] == expected
    assert hits[0]["chunk"] == {
        "start": 0,
        "end": len(TOPICS[expected]),
        "window": 0,
        "text": TOPICS[expected],
    }
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


# -------------------------------------------------------------------------------- deletion


def test_deleted_document_leaves_search_and_counts(client: httpx.Client) -> None:
    assert create(client, "deletions").status_code == 201
    docs = [
        {"id": "notes/bees", "text": TOPICS["bees"]},
        {"id": "notes/rail", "text": TOPICS["rail"]},
        {"id": "coffee", "text": TOPICS["coffee"]},
    ]
    assert index_documents(client, "deletions", docs)["status"] == "succeeded"
    assert top_ids(client, "deletions", "insects dancing")[0] == "notes/bees"

    response = client.delete("/v1/collections/deletions/documents/notes/bees")
    assert response.status_code == 204, response.text
    assert "notes/bees" not in top_ids(client, "deletions", "insects dancing", k=10)
    view = client.get("/v1/collections/deletions").json()
    assert (view["documents"], view["chunks"], view["indexed"]) == (2, 2, 2)

    again = client.delete("/v1/collections/deletions/documents/notes/bees")
    assert again.status_code == 404
    assert again.json() == {"detail": "no document 'notes/bees' in collection 'deletions'"}


# --------------------------------------------------------------------------------- uploads


def test_ndjson_upload_is_indexed_and_its_file_removed(
    client: httpx.Client, data_dir: Path
) -> None:
    assert create(client, "uploaded").status_code == 201
    lines = [json.dumps({"id": k, "text": v}) for k, v in TOPICS.items()]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"id": "blank", "text": "   "}))

    def body() -> Iterator[bytes]:  # sent in chunks, as a large corpus would be
        for line in lines:
            yield (line + "\n").encode()

    response = client.post(
        "/v1/collections/uploaded/uploads",
        content=body(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"total": 20, "done": 20, "failed": 0}
    errors = client.get(f"/v1/jobs/{job['id']}/errors").json()["errors"]
    assert [(e["line"], e["reason"]) for e in errors] == [(3, "invalid JSON"), (6, "blank text")]
    assert top_ids(client, "uploaded", "fjords in Norway")[0] == "glacier"
    # The upload is removed once ingestion is over (just after the job is marked finished).
    deadline = time.monotonic() + 10
    while list((data_dir / "uploads").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((data_dir / "uploads").glob("*"))

    wrong = client.post(
        "/v1/collections/uploaded/uploads", content=b"{}", headers={"content-type": "text/csv"}
    )
    assert wrong.status_code == 415 and "application/x-ndjson" in wrong.json()["detail"]


# ---------------------------------------------------------------------------- client errors


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/collections/nowhere", None),
        ("POST", "/v1/collections/nowhere/search", {"query": "bees"}),
        ("POST", "/v1/collections/nowhere/documents", {"documents": [{"id": "a", "text": "b"}]}),
        ("DELETE", "/v1/collections/nowhere/documents/a", None),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", None),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/errors", None),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/result", None),
    ],
)
def test_unknown_collections_and_jobs_are_404(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 404, response.text
    assert isinstance(response.json()["detail"], str)


def test_upload_to_an_unknown_collection_is_404(client: httpx.Client) -> None:
    response = client.post(
        "/v1/collections/nowhere/uploads",
        content=b'{"id": "a", "text": "b"}\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"query": "bees", "k": 0},
        {"query": "bees", "k": 1001},
        {"query": "bees", "k": "many"},
        {"k": 5},
        {"query": ""},
        {"query": "   "},
        {"query": "x" * 10_001},
        {"query": ["bees"]},
    ],
)
def test_bad_search_requests_are_422(
    client: httpx.Client, topics: dict[str, Any], body: dict[str, Any]
) -> None:
    response = client.post("/v1/collections/topics/search", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/v1/collections/topics/search", b"{not json"),
        ("/v1/collections/topics/documents", b'{"documents": {"id": "a"}}'),
        ("/v1/collections/topics/documents", b"[]"),
        ("/v1/collections", b'"topics"'),
        ("/v1/jobs", b"null"),
    ],
)
def test_malformed_bodies_are_422(client: httpx.Client, path: str, content: bytes) -> None:
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_a_bad_collection_name_in_the_path_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/collections/.hidden/search", json={"query": "bees"})
    assert response.status_code == 422
    assert client.get("/v1/collections/..%2Fx").status_code == 404


def test_too_many_documents_in_one_request_is_413(
    client: httpx.Client, topics: dict[str, Any]
) -> None:
    docs = [{"id": str(i), "text": "t"} for i in range(10_001)]
    response = client.post("/v1/collections/topics/documents", json={"documents": docs})
    assert response.status_code == 413
    assert "at most 10000" in response.json()["detail"]
    assert client.get("/v1/collections/topics").json()["documents"] == 20


def test_errors_paging_is_validated(client: httpx.Client, topics: dict[str, Any]) -> None:
    path = f"/v1/jobs/{topics['id']}/errors"
    assert client.get(path, params={"limit": 0}).status_code == 422
    assert client.get(path, params={"offset": -1}).status_code == 422


# ------------------------------------------------------------------------ record validation


def test_request_records_are_checked_exactly_like_jsonl_lines(tmp_path: Path) -> None:
    objects: list[Any] = [
        {"id": 7, "text": "fine", "title": " ", "metadata": {"a": 1}},
        {"_id": "beir", "text": "fine", "title": "T"},
        {"id": "", "text": "x"},
        {"id": True, "text": "x"},
        {"id": "a", "text": 3},
        {"id": "a", "text": "\n"},
        {"id": "a", "text": "x", "title": 1},
        {"id": "a", "text": "x", "meta": []},
        [1, 2],
        None,
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    from_file = list(read_corpus([str(path)]))
    from_objects = [
        record_from_object(o, source=str(path), line=n) for n, o in enumerate(objects, 1)
    ]
    assert from_objects == from_file
    assert isinstance(from_objects[0], Record) and from_objects[0].title is None


def test_cancel_stops_a_queued_job_before_it_runs(client: httpx.Client) -> None:
    assert create(client, "busy").status_code == 201
    assert create(client, "cancelled").status_code == 201
    filler = [
        {"id": f"d{i}", "text": f"{text} Number {i}."}
        for i, text in enumerate(list(TOPICS.values()) * 8)
    ]
    first = client.post("/v1/collections/busy/documents", json={"documents": filler})
    second = client.post("/v1/collections/cancelled/documents", json={"documents": filler[:5]})
    assert first.status_code == second.status_code == 202
    # Jobs run one at a time here: the second waits behind the first, and is cancelled there.
    second_id = second.json()["job_id"]
    cancelled = client.post(f"/v1/jobs/{second_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert wait_for_job(client, first.json()["job_id"])["status"] == "succeeded"
    time.sleep(1.0)
    job = client.get(f"/v1/jobs/{second_id}").json()
    assert job["status"] == "cancelled" and job["progress"]["done"] == 0
    assert client.get("/v1/collections/cancelled").json()["chunks"] == 0
    again = client.post(f"/v1/jobs/{second_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert client.post("/v1/jobs/0123456789abcdef0123456789abcdef/cancel").status_code == 404
