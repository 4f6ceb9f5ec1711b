"""What the API, Flower and the workers refuse at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from embedq.api.exposure import start_problem
from embedq.tasks.settings import Settings


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path, **extra)  # type: ignore[arg-type]


def test_an_open_api_is_refused_off_loopback_only(tmp_path: Path) -> None:
    plain = _settings(tmp_path)
    for host in ("127.0.0.1", "::1", "localhost"):
        assert start_problem("api", host, plain, environ={}) is None
    problem = start_problem("api", "0.0.0.0", plain, environ={})
    assert problem is not None and "EMBEDQ_API_KEYS=true" in problem and "--insecure" in problem
    keyed = _settings(tmp_path, api_keys=True)
    assert start_problem("api", "0.0.0.0", keyed, environ={}) is None


def test_insecure_allows_it_with_a_loud_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert (
            start_problem("api", "0.0.0.0", _settings(tmp_path), insecure=True, environ={}) is None
        )
        allowed = _settings(tmp_path, insecure=True)
        assert start_problem("api", "10.0.0.5", allowed, environ={}) is None
    assert "WITHOUT API KEYS" in caplog.text


def test_flower_needs_a_login_off_loopback(tmp_path: Path) -> None:
    plain = _settings(tmp_path)
    assert start_problem("flower", "0.0.0.0", plain, environ={}) is not None
    assert start_problem("flower", "0.0.0.0", plain, environ={"FLOWER_BASIC_AUTH": "u:pw"}) is None


@pytest.mark.parametrize(
    ("url", "environ", "named"),
    [
        ("postgresql+psycopg://embedq:change-me@db/embedq", {}, "database password"),
        ("sqlite:///x.db", {"FLOWER_BASIC_AUTH": "admin:change-me"}, "Flower's password"),
        ("sqlite:///x.db", {"FLOWER_BASIC_AUTH": "a:good,b:CHANGEME"}, "Flower's password"),
    ],
)
def test_placeholder_secrets_are_refused_by_every_service(
    tmp_path: Path, url: str, environ: dict[str, str], named: str
) -> None:
    settings = _settings(tmp_path, database_url=url, api_keys=True)
    for service, host in (("api", "127.0.0.1"), ("flower", "0.0.0.0"), ("worker", None)):
        problem = start_problem(service, host, settings, insecure=True, environ=environ)
        assert problem is not None and named in problem, service


def test_real_secrets_pass(tmp_path: Path) -> None:
    settings = _settings(tmp_path, database_url="postgresql+psycopg://u:Xk9-real@db/e")
    assert start_problem("worker", None, settings, environ={"FLOWER_BASIC_AUTH": "a:b"}) is None
