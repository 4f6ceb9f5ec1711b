"""Property-based requests from the API's own OpenAPI schema (schemathesis) against a real
``embedq api`` server: whatever a client sends, the answer is never a 5xx.

Bounded: a few dozen examples per operation, valid and invalid, so the run stays short.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.integration.conftest import clean_env
from tests.services import Process, embedq_process, free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Process]]:
    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = clean_env(EMBEDQ_DATA_DIR=str(root / "data"), TOKENIZERS_PARALLELISM="false")
    proc: Process = embedq_process(
        ["api", "--host", "127.0.0.1", "--port", str(port)], env, root / "server.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz")
        # Something for the generated names to find now and then.
        with httpx.Client(base_url=url, timeout=120) as client:
            for name in ("a", "0"):
                assert client.post("/v1/collections", json={"name": name}).status_code == 201
                docs = [{"id": "d1", "text": "Bees dance."}, {"id": "d2", "text": "Trains run."}]
                response = client.post(
                    f"/v1/collections/{name}/documents", json={"documents": docs}
                )
                assert response.status_code == 202
        yield url, proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api_url(server: tuple[str, Process]) -> str:
    return server[0]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """Upload bodies: a generated string as it is (any bytes), anything else as one JSON line."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    return json.dumps(value).encode() + b"\n"


def _schema() -> schemathesis.BaseSchema:
    """The schema the server serves: built from the app itself, no server needed."""
    from embedq.api.app import create_app

    loaded = schemathesis.openapi.from_dict(create_app().openapi())
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return loaded


schema = _schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_a_server_error(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, checks=[not_a_server_error], timeout=120)


def test_server_logged_no_unhandled_error(server: tuple[str, Process]) -> None:
    """Runs after the fuzzing (same module): the server is up and never hit its 500 handler."""
    url, proc = server
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert "unhandled error on" not in proc.output(), proc.output()[-4000:]
