"""An embedded API that starts after a stop fails the jobs the stop interrupted and removes
their upload files; jobs it does not own (a command-line index job) are left alone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from embedq.api.interrupted import INTERRUPTED
from embedq.storage.db import make_engine, make_sessionmaker
from embedq.storage.jobs import create_job, mark_running
from embedq.storage.schema import upgrade
from tests.integration.conftest import clean_env
from tests.services import Process, embedq_process, free_port, wait_http

pytestmark = pytest.mark.integration


def test_a_restarted_api_fails_what_the_last_stop_interrupted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'embedq.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        running = create_job(session, "index", params={"source": "upload", "format": "jsonl"})
        mark_running(session, running)
        queued = create_job(session, "index", params={"source": "request", "records": 3})
        cli = create_job(session, "index", params={"paths": ["x.jsonl"], "format": None})
        mark_running(session, cli)
    engine.dispose()
    uploads = data / "uploads"
    uploads.mkdir(parents=True)
    for job_id in (running, "0" * 32):
        (uploads / f"{job_id}.jsonl").write_text('{"id": "a", "text": "b"}\n')

    port = free_port()
    env = clean_env(EMBEDQ_DATA_DIR=str(data))
    proc: Process = embedq_process(
        ["api", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "server.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for job_id in (running, queued):
                job = client.get(f"/v1/jobs/{job_id}").json()
                assert (job["status"], job["error"]) == ("failed", INTERRUPTED)
            assert client.get(f"/v1/jobs/{cli}").json()["status"] == "running"
        assert list(uploads.iterdir()) == []
    finally:
        proc.stop()
