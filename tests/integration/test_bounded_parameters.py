"""Expensive parameters are bounded at the door: a real ``embedq api`` server answers 422 with
the reason to an index type, a zero-shot template or a k range that would cost without limit,
and creates nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import clean_env
from tests.services import Process, embedq_process, free_port, wait_http

pytestmark = pytest.mark.integration


UPLOAD_LIMIT = 50_000


@pytest.fixture(scope="module")
def upload_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bounded")


@pytest.fixture(scope="module")
def client(upload_root: Path) -> Iterator[httpx.Client]:
    root = upload_root
    port = free_port()
    env = clean_env(EMBEDQ_DATA_DIR=str(root / "data"), EMBEDQ_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))
    proc: Process = embedq_process(
        ["api", "--host", "127.0.0.1", "--port", str(port)], env, root / "server.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield http
    finally:
        proc.stop()
        assert "unhandled error on" not in proc.output(), proc.output()[-4000:]


def _reason(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(d["msg"] for d in detail)


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        ("IVF10000000,Flat", "IVF's list count is 10000000; it must be in 1..65536"),
        ("HNSW100000", "HNSW's M (graph links per vector) is 100000; it must be in 4..64"),
        ("IVF64,PQ8x16", "PQ's bits per code is 16"),
        ("IDMap,Flat", "is not an accepted index type"),
    ],
)
def test_an_unbounded_index_type_is_422(client: httpx.Client, index: str, reason: str) -> None:
    response = client.post("/v1/collections", json={"name": "costly", "index": index})
    assert reason in _reason(response)
    assert client.get("/v1/collections/costly").status_code == 404


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{}}{:>20000000}", "no brace but the one '{}'"),
        ("{0.__class__} {}", "no brace but the one '{}'"),
        ("About {} and {}.", "exactly once"),
        ("x" * 501 + "{}", "at most 500"),
    ],
)
def test_a_format_spec_template_is_422(client: httpx.Client, template: str, reason: str) -> None:
    body: dict[str, Any] = {
        "kind": "zero_shot",
        "texts": ["a text"],
        "labels": ["a", "b"],
        "template": template,
    }
    assert reason in _reason(client.post("/v1/jobs", json=body))


def test_a_label_is_filled_in_literally(client: httpx.Client) -> None:
    body = {"kind": "zero_shot", "texts": ["A cat sat."], "labels": ["{0}", "{:>9}"]}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("k_range", "reason"),
    [([2, 9999], "k_max=9999: at most 256"), ([2, 200], "holds 199 values of k; at most 32")],
)
def test_a_huge_k_range_is_422(client: httpx.Client, k_range: list[int], reason: str) -> None:
    body = {"kind": "cluster", "collection": "any", "k_range": k_range}
    assert reason in _reason(client.post("/v1/jobs", json=body))


@pytest.mark.parametrize(("kind", "key"), [("eval_sts", "file"), ("eval_beir", "dir")])
def test_a_nul_in_an_evaluation_path_is_422(client: httpx.Client, kind: str, key: str) -> None:
    response = client.post("/v1/jobs", json={"kind": kind, key: "sts\u0000.csv"})
    assert "must name a path inside" in _reason(response)


def test_an_upload_over_the_total_limit_is_413_and_leaves_nothing(
    client: httpx.Client, upload_root: Path
) -> None:
    assert client.post("/v1/collections", json={"name": "uploads"}).status_code in (200, 201)
    line = b'{"id": "x", "text": "' + b"a" * 1000 + b'"}\n'

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to refuse up front
        for _ in range(100):
            yield line

    streamed = client.post(
        "/v1/collections/uploads/uploads",
        content=chunks(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert streamed.status_code == 413, streamed.text
    assert "EMBEDQ_MAX_UPLOAD_BYTES" in streamed.json()["detail"]
    declared = client.post(
        "/v1/collections/uploads/uploads",
        content=line * 100,
        headers={"content-type": "application/x-ndjson"},
    )
    assert declared.status_code == 413, declared.text
    uploads = upload_root / "data" / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/collections", {"name": "folder", "model": "/etc"}),
        ("/v1/jobs", {"kind": "embed", "texts": ["a"], "model": "/usr/share"}),
        ("/v1/jobs", {"kind": "words", "sentence": "a b a", "model": "org/unlisted"}),
    ],
)
def test_a_model_the_operator_did_not_list_is_422(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    assert "not allowed over HTTP" in _reason(client.post(path, json=body))
