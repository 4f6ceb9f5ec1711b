"""API keys, end to end: ``embedq keys`` on the command line and real ``embedq api`` servers
with keys on (every route but /healthz needs a live key) and off (nothing needs one)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedq.api.auth import INVALID, MISSING
from tests.integration.conftest import clean_env, embedq
from tests.services import Process, embedq_process, free_port, wait_http

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keyed_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("keys") / "data"
    return clean_env(EMBEDQ_DATA_DIR=str(data), EMBEDQ_API_KEYS="true")


SERVERS: dict[str, Process] = {}


def _serve(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    proc: Process = embedq_process(["api", "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        SERVERS[url] = proc
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def keyed(keyed_env: dict[str, str]) -> Iterator[str]:
    """A server with EMBEDQ_API_KEYS=true."""
    yield from _serve(keyed_env, Path(keyed_env["EMBEDQ_DATA_DIR"]).parent / "server.log")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with keys off (the default)."""
    root = tmp_path_factory.mktemp("open")
    yield from _serve(clean_env(EMBEDQ_DATA_DIR=str(root / "data")), root / "server.log")


def new_key(env: dict[str, str], name: str) -> dict[str, Any]:
    proc = embedq(env, "keys", "create", name, "--json")
    assert proc.returncode == 0, proc.stderr
    created: dict[str, Any] = json.loads(proc.stdout)
    return created


def key_rows(env: dict[str, str]) -> list[tuple[Any, ...]]:
    db = Path(env["EMBEDQ_DATA_DIR"]) / "embedq.db"
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT * FROM api_keys ORDER BY id"))


def test_healthz_and_documentation_need_no_key(keyed: str) -> None:
    assert httpx.get(f"{keyed}/healthz").json() == {"status": "ok", "database": "ok"}
    assert httpx.get(f"{keyed}/docs").status_code == 200
    spec = httpx.get(f"{keyed}/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/collections/anything", None),
        ("POST", "/v1/collections", {"name": "sneaky"}),
        ("POST", "/v1/collections/anything/search", {"query": "bees"}),
        ("POST", "/v1/jobs", {"kind": "embed", "texts": ["a"]}),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", None),
        ("DELETE", "/v1/collections/anything/documents/a", None),
    ],
)
def test_every_route_but_healthz_needs_a_key(
    keyed: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = httpx.request(method, f"{keyed}{path}", json=body)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": MISSING}


def test_a_malformed_body_without_a_key_is_401_not_422(keyed: str) -> None:
    response = httpx.post(
        f"{keyed}/v1/collections",
        content=b'{"name": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": MISSING}


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _send_body(sock: socket.socket, size: int) -> None:
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
    except OSError:
        pass  # the server answered and closed: the rest of the body is never read


def test_a_60_mb_body_without_a_key_is_refused_at_once_without_reading_it(keyed: str) -> None:
    pid = SERVERS[keyed].proc.pid
    before = _peak_rss(pid)
    size = 60 * 1024 * 1024
    host, port = keyed.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /v1/collections/big/documents HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sender = threading.Thread(target=_send_body, args=(sock, size), daemon=True)
        sender.start()
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            if not got:
                break
            answer += got
        elapsed = time.monotonic() - started
        # The server may have closed its side already, having answered.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(30)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert elapsed < 2.0, f"refused after {elapsed:.2f} s"
    growth = _peak_rss(pid) - before
    assert growth < 64 * 1024 * 1024, f"peak memory grew by {growth / 2**20:.0f} MiB"


def test_an_upload_without_a_key_is_refused_before_anything_is_stored(
    keyed: str, keyed_env: dict[str, str]
) -> None:
    response = httpx.post(
        f"{keyed}/v1/collections/anything/uploads",
        content=b'{"id": "a", "text": "b"}\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 401
    uploads = Path(keyed_env["EMBEDQ_DATA_DIR"]) / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer eq_0123456789ab_not-the-secret"},
        {"Authorization": "Bearer garbage"},
        {"X-API-Key": "eq__"},
    ],
)
def test_a_wrong_key_is_401(keyed: str, headers: dict[str, str]) -> None:
    response = httpx.get(f"{keyed}/v1/collections/anything", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": INVALID}


def test_basic_auth_is_not_a_key(keyed: str) -> None:
    response = httpx.get(f"{keyed}/v1/collections/anything", auth=("admin", "admin"))
    assert response.status_code == 401
    assert response.json() == {"detail": MISSING}


def test_key_lifecycle_create_use_list_revoke(keyed: str, keyed_env: dict[str, str]) -> None:
    created = new_key(keyed_env, "ci")
    key = created["key"]
    assert key.startswith("eq_") and created["name"] == "ci"
    prefix = key.split("_")[1]

    bearer = {"Authorization": f"Bearer {key}"}
    # A live key reaches the route: the unknown collection is a 404, not a 401.
    assert httpx.get(f"{keyed}/v1/collections/anything", headers=bearer).status_code == 404
    assert httpx.get(f"{keyed}/v1/collections/x", headers={"X-API-Key": key}).status_code == 404
    made = httpx.post(
        f"{keyed}/v1/collections", json={"name": "keyed"}, headers=bearer, timeout=120
    )
    assert made.status_code == 201, made.text

    listed = embedq(keyed_env, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["prefix"]: row for row in json.loads(listed.stdout)}
    assert rows[prefix]["name"] == "ci" and rows[prefix]["revoked_at"] is None
    assert rows[prefix]["last_used_at"] is not None
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    plain = embedq(keyed_env, "keys", "list")
    assert prefix in plain.stdout and key not in plain.stdout

    revoked = embedq(keyed_env, "keys", "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    response = httpx.get(f"{keyed}/v1/collections/keyed", headers=bearer)
    assert response.status_code == 401 and response.json() == {"detail": INVALID}
    again = embedq(keyed_env, "keys", "revoke", prefix)
    assert again.returncode == 0 and "already revoked" in again.stdout


def test_revoking_by_id_leaves_other_keys_working(keyed: str, keyed_env: dict[str, str]) -> None:
    first, second = new_key(keyed_env, "one"), new_key(keyed_env, "two")
    assert embedq(keyed_env, "keys", "revoke", str(first["id"])).returncode == 0
    url = f"{keyed}/v1/collections/nowhere"
    assert httpx.get(url, headers={"X-API-Key": first["key"]}).status_code == 401
    assert httpx.get(url, headers={"X-API-Key": second["key"]}).status_code == 404


def test_the_database_never_holds_a_key_in_clear(keyed_env: dict[str, str]) -> None:
    created = new_key(keyed_env, "audit")
    secret = created["key"].split("_", 2)[2]
    rows = key_rows(keyed_env)
    dump = "\n".join(str(value) for row in rows for value in row)
    assert created["key"] not in dump and secret not in dump
    stored = next(row for row in rows if row[0] == created["id"])
    assert hashlib.sha256(secret.encode()).hexdigest() in stored


def test_cli_errors_are_one_line(keyed_env: dict[str, str]) -> None:
    unknown = embedq(keyed_env, "keys", "revoke", "nope")
    assert unknown.returncode == 2 and "no API key 'nope'" in unknown.stderr
    blank = embedq(keyed_env, "keys", "create", "  ")
    assert blank.returncode == 2 and "1 to 128 characters" in blank.stderr
    shown = embedq(keyed_env, "keys", "create", "printed")
    assert shown.returncode == 0
    assert shown.stdout.startswith("eq_") and len(shown.stdout.splitlines()) == 1
    assert "shown only this once" in shown.stderr


def test_with_keys_off_no_key_is_needed(open_server: str) -> None:
    assert httpx.get(f"{open_server}/v1/collections/nowhere").status_code == 404
    made = httpx.post(f"{open_server}/v1/collections", json={"name": "open"}, timeout=120)
    assert made.status_code == 201
    # A key header is ignored, not checked, when keys are off.
    bogus = {"Authorization": "Bearer eq_bogus_bogus"}
    assert httpx.get(f"{open_server}/v1/collections/open", headers=bogus).status_code == 200


def test_an_api_without_keys_is_refused_on_a_public_address(tmp_path: Path) -> None:
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"))
    refused = embedq(env, "api", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2
    assert "refusing to serve the API on 0.0.0.0 without API keys" in refused.stderr
