"""docker-compose.yml and the images: the file is valid Compose, says what production needs,
and every embedq service's command works when run here against the local PostgreSQL and Redis.

No Docker engine runs where the tests run, so the commands run from the project's virtual
environment, with the service's own environment and the compose host names mapped to the
local services.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import fresh_pg_database, redis_db

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = ROOT.parent / "shared" / "data" / "compose" / "compose-spec.json"

# What the images set (checked against the Dockerfiles below).
APP_DIR = "/app"
IMAGE_ENTRYPOINT = ["embedq"]

SECRETS = ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
# What a user's .env would hold; everything else takes the file's defaults.
TEST_VARIABLES = {"POSTGRES_PASSWORD": "test-password", "FLOWER_BASIC_AUTH": "u:p"}
REQUIRED_SERVICES = {
    "redis",
    "postgres",
    "migrate",
    "api",
    "worker-embed",
    "worker-index",
    "flower",
}

# A Redis database number that nothing else uses; flushed before and after.
# The migrate service never reaches the broker; the others get a leased DB number.
UNUSED_BROKER = "redis://127.0.0.1:6379/15"
STARTUP_TIMEOUT = 60.0
WORKER_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0

pytestmark = pytest.mark.integration


# --- Compose's variable interpolation -------------------------------------------------------


class MissingVariable(Exception):
    """A ``${VAR:?message}`` (or ``${VAR?message}``) whose variable is not set."""


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def _resolve(expr: str, env: Mapping[str, str]) -> str:
    m = _BRACED.fullmatch(expr)
    if m is None:
        raise ValueError(f"cannot interpolate ${{{expr}}}")
    name, op, arg = m["name"], m["op"] or "", m["arg"] or ""
    value = env.get(name)
    present = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("?") and not present:
        raise MissingVariable(f"{name}: {arg}")
    if op.endswith("-") and not present:
        return arg
    if op.endswith("+"):
        return arg if present else ""
    return value or ""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$`` in
    every string of a loaded compose file, as ``docker compose`` does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        if m["named"]:
            return env.get(m["named"], "")
        return _resolve(m["braced"], env)

    return _REFERENCE.sub(one, value)


def _raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


RAW = _raw()
COMPOSE = interpolate(RAW, TEST_VARIABLES)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _embedq_services() -> list[str]:
    """The services that run an embedq image (built from this repository)."""
    return sorted(name for name, svc in SERVICES.items() if "build" in svc)


def _worker_services() -> list[str]:
    return sorted(
        name for name in _embedq_services() if SERVICES[name].get("command", [None])[0] == "worker"
    )


def _option(command: list[str], *names: str) -> str | None:
    for i, arg in enumerate(command[:-1]):
        if arg in names:
            return command[i + 1]
    return None


def _queues(service: str) -> set[str]:
    queues = _option(SERVICES[service]["command"], "-Q", "--queues") or "embed"
    return {q.strip() for q in queues.split(",") if q.strip()}


# --- the file ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"the Compose JSON schema is absent ({SCHEMA}); it lives in ../shared/data")
    from jsonschema import Draft7Validator

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert "version" not in RAW, "the Compose specification has no top-level version"


def test_required_services_exist() -> None:
    assert set(SERVICES) >= REQUIRED_SERVICES, REQUIRED_SERVICES - set(SERVICES)


def test_secrets_are_required_from_the_environment_never_defaulted() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^A-Za-z0-9_][^}]*)?\}", text)
        assert uses, f"{name} is not used"
        assert all(u.startswith(":?") for u in uses), f"{name} must be ${{{name}:?...}}: {uses}"
        env = {k: v for k, v in TEST_VARIABLES.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate(RAW, env)
        env[name] = ""
        with pytest.raises(MissingVariable, match=name):
            interpolate(RAW, env)
    pg_password = RAW["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg_password.startswith("${POSTGRES_PASSWORD:?")
    assert RAW["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )
    for name in _embedq_services():
        db_url = RAW["services"][name]["environment"]["EMBEDQ_DATABASE_URL"]
        assert "${POSTGRES_PASSWORD:?" in db_url, name


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    listed = {ln.split("=", 1)[0].strip() for ln in lines if "=" in ln and not ln.startswith("#")}
    assert used <= listed, f".env.example lacks {sorted(used - listed)}"


def test_embed_worker_reserves_a_gpu_and_runs_the_gpu_image() -> None:
    svc = SERVICES["worker-embed"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    ), devices
    assert svc["build"]["dockerfile"] == "Dockerfile.gpu"
    assert svc["environment"]["EMBEDQ_DEVICE"] == "auto"
    assert _queues("worker-embed") == {"embed"}


def test_index_queue_has_exactly_one_consumer() -> None:
    writers = [name for name in _worker_services() if "index" in _queues(name)]
    assert writers == ["worker-index"], writers
    assert _queues("worker-index") == {"index"}
    assert SERVICES["worker-index"]["deploy"]["replicas"] == 1


def _mounts(svc: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source", ""), vol["target"]
        out.add((source, target))
    return out


def test_every_embedq_service_shares_the_data_volume() -> None:
    names = _embedq_services()
    assert set(names) >= REQUIRED_SERVICES - {"redis", "postgres"}
    assert "embedq-data" in COMPOSE["volumes"]
    for name in names:
        svc = SERVICES[name]
        assert ("embedq-data", "/data") in _mounts(svc), name
        assert svc["environment"]["EMBEDQ_DATA_DIR"] == "/data", name
        assert svc["environment"]["EMBEDQ_BROKER_URL"] == "redis://redis:6379/0", name
        assert svc["environment"]["EMBEDQ_DATABASE_URL"] == (
            "postgresql+psycopg://embedq:test-password@postgres:5432/embedq"
        ), name


def test_healthchecks_and_start_order() -> None:
    for name in ("redis", "postgres", "api", "flower"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert ("postgres-data", "/var/lib/postgresql/data") in _mounts(SERVICES["postgres"])
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ["api", *_worker_services()]:
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert SERVICES["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_published_ports_reach_the_ports_the_commands_listen_on() -> None:
    for name, port in (("api", "8000"), ("flower", "5555")):
        svc = SERVICES[name]
        assert _option(svc["command"], "--port") == port, name
        assert _option(svc["command"], "--host") == "0.0.0.0", name
        assert [p.rsplit(":", 1)[1] for p in svc["ports"]] == [port], name
        # Published on loopback unless the operator says otherwise.
        assert [p.split(":", 1)[0] for p in svc["ports"]] == ["127.0.0.1"], name


def _dockerfile(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_images_run_embedq_as_a_user_with_data_in_a_volume(name: str) -> None:
    text = _dockerfile(name)
    assert re.search(r"^ENTRYPOINT \[\"embedq\"\]$", text, re.M), name
    assert re.search(rf"^WORKDIR {APP_DIR}$", text, re.M), name
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), name
    assert re.search(r"^VOLUME /data$", text, re.M), name
    assert "HF_HUB_OFFLINE=1" in text, name
    assert "scripts/prestart.sh" in text, name
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pin = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M)
    if pin:
        assert f"ARG TORCH_VERSION={pin[1]}" in text, "the image's torch differs from make's"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "embedq-data", ".env"} <= set(ignored)


def test_gpu_image_swaps_faiss_cpu_for_faiss_gpu() -> None:
    text = _dockerfile("Dockerfile.gpu")
    assert re.search(r"^FROM nvidia/cuda:12\.\S+-cudnn-runtime-ubuntu22\.04$", text, re.M)
    project, uninstall, gpu = (
        text.index("pip install ."),
        text.index("pip uninstall -y faiss-cpu"),
        text.index('pip install "faiss-gpu-cu12'),
    )
    assert project < uninstall < gpu
    assert re.search(r"download\.pytorch\.org/whl/cu12\d", text)


# --- the commands, run here ---------------------------------------------------------------


def _embedq_bin() -> Path:
    beside = Path(sys.executable).parent / "embedq"
    found = beside if beside.is_file() else shutil.which("embedq")
    if not found:
        pytest.skip("the embedq command is not installed (make install)")
    return Path(found)


def _local_argv(service: str, embedq: Path, port: int | None = None) -> list[str]:
    """The service's entrypoint and command as they run here: the image's paths mapped to
    the repository, the listening address to a free local port."""
    svc = SERVICES[service]
    argv = list(svc.get("entrypoint") or IMAGE_ENTRYPOINT) + list(svc.get("command") or [])
    out = []
    for i, arg in enumerate(argv):
        prev = argv[i - 1] if i else None
        if i == 0 and arg == "embedq":
            out.append(str(embedq))
        elif i == 0 and arg.startswith(APP_DIR + "/"):
            out.append(str(ROOT / arg[len(APP_DIR) + 1 :]))
        elif prev == "--host":
            out.append("127.0.0.1")
        elif prev == "--port":
            assert port is not None, f"{service} listens: give it a port"
            out.append(str(port))
        else:
            out.append(arg)
    return out


def _local_env(
    service: str, db_url: str, data_dir: Path, bin_dir: Path, broker: str = UNUSED_BROKER
) -> dict[str, str]:
    """The service's environment, with the compose host names mapped to the local services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDQ_", "FLOWER_"))}
    env.update({k: str(v) for k, v in SERVICES[service].get("environment", {}).items()})
    env.update(
        EMBEDQ_DATABASE_URL=db_url,
        EMBEDQ_BROKER_URL=broker,
        EMBEDQ_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        EMBEDQ_DB_WAIT_SECONDS="15",
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if "EMBEDQ_RESULT_BACKEND" in env:
        env["EMBEDQ_RESULT_BACKEND"] = broker
    if "EMBEDQ_METRICS_PORT" in env:  # the compose port, mapped to a free one here
        env.update(EMBEDQ_METRICS_PORT=str(_free_port()), EMBEDQ_METRICS_ADDR="127.0.0.1")
    unmapped = {
        k: v
        for k, v in env.items()
        if k.startswith("EMBEDQ_") and re.search(r"//([^/@]*@)?(postgres|redis)[:/]", v)
    }
    assert not unmapped, f"settings that still point at compose hosts: {unmapped}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.exists() else ""


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen, self.log = popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"exited with {self.popen.returncode}:\n{_tail(self.log)}")

    def stop(self) -> int:
        """SIGTERM, then wait for a clean exit."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT:.0f} s after SIGTERM:\n{_tail(self.log)}")


@contextmanager
def _running(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[Proc]:
    log = cwd / "service.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


def _http(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _scrape(url: str, bearer: str | None = None) -> set[str]:
    """The metric family names of a Prometheus exposition (parsed by prometheus-client)."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(url)
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name for family in text_string_to_metric_families(text)}


def _wait_http(proc: Proc, url: str, timeout: float = STARTUP_TIMEOUT) -> int:
    deadline = time.monotonic() + timeout
    while True:
        proc.check_alive()
        try:
            return _http(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                pytest.fail(f"no answer at {url} within {timeout:.0f} s:\n{_tail(proc.log)}")
            time.sleep(0.5)


def _healthcheck(service: str, port: int, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """The service's compose healthcheck, run here against the service's local port."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    args = [
        a.replace(
            f"127.0.0.1:{_option(SERVICES[service]['command'], '--port')}/", f"127.0.0.1:{port}/"
        )
        for a in test[2:]
    ]
    return subprocess.run(
        [str(bin_dir / "python"), *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def embedq() -> Path:
    return _embedq_bin()


@pytest.fixture(scope="module")
def local_redis() -> Iterator[str]:
    with redis_db() as url:
        yield url


@pytest.fixture(scope="module")
def local_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped after the module."""
    with fresh_pg_database("embedq_compose") as url:
        yield url


@pytest.fixture(scope="module")
def migrate_run(
    embedq: Path, local_database: str, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """The migrate service, run once on the fresh database (compose runs it first too)."""
    cwd = tmp_path_factory.mktemp("migrate")
    return subprocess.run(
        _local_argv("migrate", embedq),
        env=_local_env("migrate", local_database, cwd / "data", embedq.parent),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def migrated(migrate_run: subprocess.CompletedProcess[str], local_database: str) -> str:
    if migrate_run.returncode != 0:
        pytest.fail(f"the migrate service failed first:\n{migrate_run.stderr[-4000:]}")
    return local_database


@pytest.mark.slow
def test_migrate_applies_the_schema(
    migrate_run: subprocess.CompletedProcess[str], local_database: str
) -> None:
    from embedq.storage.db import make_engine
    from embedq.storage.schema import is_current

    output = migrate_run.stdout + migrate_run.stderr
    assert migrate_run.returncode == 0, output[-4000:]
    assert "database is up to date" in migrate_run.stdout
    engine = make_engine(local_database)
    try:
        assert is_current(engine)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_prestart_gives_up_on_a_database_that_does_not_answer(embedq: Path, tmp_path: Path) -> None:
    env = _local_env(
        "migrate", "postgresql+psycopg://postgres@127.0.0.1:1/none", tmp_path, embedq.parent
    )
    env["EMBEDQ_DB_WAIT_SECONDS"] = "2"
    started = time.monotonic()
    done = subprocess.run(
        _local_argv("migrate", embedq),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "waiting for the database" in done.stderr
    assert "the database is not reachable" in done.stderr
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_api_answers_healthz(embedq: Path, migrated: str, local_redis: str, tmp_path: Path) -> None:
    port = _free_port()
    env = _local_env("api", migrated, tmp_path / "data", embedq.parent, local_redis)
    with _running(_local_argv("api", embedq, port), env, tmp_path) as proc:
        assert _wait_http(proc, f"http://127.0.0.1:{port}/healthz") == 200
        check = _healthcheck("api", port, embedq.parent)
        assert check.returncode == 0, check.stderr
        # Prometheus's way in: a key made with the documented command, sent as a bearer token.
        assert _http(f"http://127.0.0.1:{port}/metrics") == 401
        made = subprocess.run(
            [str(embedq), "keys", "create", "prometheus"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        metrics = _scrape(f"http://127.0.0.1:{port}/metrics", bearer=made.stdout.strip())
        assert {"embedq_jobs", "embedq_batches", "embedq_http_request_seconds"} <= metrics
        # uvicorn shuts down, then raises the signal it caught again: -SIGTERM is its clean exit.
        assert proc.stop() in (0, -signal.SIGTERM), _tail(proc.log)
        assert "Application shutdown complete" in _tail(proc.log)


@pytest.mark.slow
def test_flower_answers_behind_basic_auth(embedq: Path, local_redis: str, tmp_path: Path) -> None:
    port = _free_port()
    db_url = f"sqlite:///{tmp_path / 'unused.db'}"  # Flower never opens the database
    env = _local_env("flower", db_url, tmp_path / "data", embedq.parent, local_redis)
    auth = env["FLOWER_BASIC_AUTH"]
    with _running(_local_argv("flower", embedq, port), env, tmp_path) as proc:
        assert _wait_http(proc, f"http://127.0.0.1:{port}/") == 401
        assert _http(f"http://127.0.0.1:{port}/", auth=auth) == 200
        assert _http(f"http://127.0.0.1:{port}/", auth="u:wrong") == 401
        check = _healthcheck("flower", port, embedq.parent)
        assert check.returncode == 0, check.stderr
        # Read-only: the login cannot make a worker run a task (ingest a server path, say).
        apply = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/task/async-apply/embedq.ingest_file",
            data=b'{"args": ["/etc/passwd"]}',
            method="POST",
            headers={
                "Authorization": "Basic " + base64.b64encode(auth.encode()).decode(),
                "Content-Type": "application/json",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(apply, timeout=5)
        assert refused.value.code == 403
        assert proc.stop() == 0, _tail(proc.log)


def _example_secrets() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    pairs = (ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs if k.strip() in SECRETS}


@pytest.mark.slow
@pytest.mark.parametrize("service", ["api", "flower", "worker-default"])
def test_services_refuse_the_example_placeholder_secrets(
    embedq: Path, service: str, tmp_path: Path
) -> None:
    example = _example_secrets()
    assert set(example) == set(SECRETS)
    # The database URL as compose builds it from the example; its host is never reached.
    db_url = f"postgresql+psycopg://embedq:{example['POSTGRES_PASSWORD']}@127.0.0.1:1/embedq"
    env = _local_env(service, db_url, tmp_path / "data", embedq.parent)
    if service == "flower":
        env["EMBEDQ_DATABASE_URL"] = f"sqlite:///{tmp_path / 'unused.db'}"
        env["FLOWER_BASIC_AUTH"] = example["FLOWER_BASIC_AUTH"]
    port = _free_port() if _option(SERVICES[service]["command"], "--port") else None
    done = subprocess.run(
        _local_argv(service, embedq, port),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "still hold the example's placeholder" in done.stderr


def _find_worker(client: Any, proc: Proc) -> str:
    """The node name of the worker process ``proc``, once it answers on the broker."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while time.monotonic() < deadline:
        proc.check_alive()
        stats = client.control.inspect(timeout=1.0).stats() or {}
        nodes = [node for node, s in stats.items() if s.get("pid") == proc.pid]
        if nodes:
            return str(nodes[0])
        time.sleep(0.5)
    pytest.fail(f"the worker did not answer within {WORKER_TIMEOUT:.0f} s:\n{_tail(proc.log)}")


@pytest.mark.slow
@pytest.mark.parametrize("service", _worker_services())
def test_worker_comes_up_on_its_queue_and_stops_cleanly(
    service: str, embedq: Path, migrated: str, local_redis: str, tmp_path: Path
) -> None:
    from celery import Celery

    env = _local_env(service, migrated, tmp_path / "data", embedq.parent, local_redis)
    client = Celery("embedq-compose-test", broker=local_redis, set_as_current=False)
    try:
        with _running(_local_argv(service, embedq), env, tmp_path) as proc:
            node = _find_worker(client, proc)
            assert client.control.ping(destination=[node], timeout=5.0), node
            active = client.control.inspect(destination=[node], timeout=5.0).active_queues()
            assert active, f"{node} did not list its queues"
            assert {q["name"] for q in active[node]} == _queues(service)
            metrics = _scrape(f"http://127.0.0.1:{env['EMBEDQ_METRICS_PORT']}/metrics")
            assert {"embedq_batch_seconds", "embedq_batch_failures"} <= metrics, metrics
            assert proc.stop() == 0, _tail(proc.log)
    finally:
        client.close()


# --- monitoring ----------------------------------------------------------------------------


MONITORING = ROOT / "deploy"
WORKER_METRICS = {
    "embedq_tokens_embedded_total",
    "embedq_batch_seconds_bucket",
    "embedq_batch_failures_total",
    "embedq_model_load_seconds",
}
API_METRICS = {
    "embedq_jobs",
    "embedq_batches",
    "embedq_collection_documents",
    "embedq_collection_chunks",
    "embedq_collection_indexed",
    "embedq_collection_unpublished",
    "embedq_http_request_seconds_bucket",
    "embedq_search_seconds_bucket",
}


def test_prometheus_scrapes_the_api_and_every_worker_port() -> None:
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["embedq-api"]
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    assert api["authorization"]["credentials_file"] == "/etc/prometheus/api-key"
    mount = next(v for v in RAW["services"]["prometheus"]["volumes"] if "/etc/prometheus" in v)
    assert mount.startswith("./deploy/prometheus:")
    (dns,) = jobs["embedq-workers"]["dns_sd_configs"]
    assert set(dns["names"]) == set(_worker_services())
    for name in _worker_services():
        assert SERVICES[name]["environment"]["EMBEDQ_METRICS_PORT"] == str(dns["port"]), name
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["profiles"] == ["monitoring"], name
        assert all(p.startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), name
    ignored = (MONITORING / "prometheus" / ".gitignore").read_text().split()
    assert "api-key" in ignored


def test_grafana_dashboard_queries_only_metrics_embedq_exports() -> None:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "embedq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"embedq_[a-z_]+", e)}
    assert used and used <= WORKER_METRICS | API_METRICS, used - WORKER_METRICS - API_METRICS
    source = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
