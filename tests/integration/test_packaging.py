"""The installed distribution claims one import name, ``embedq``: a user's own ``tasks.py`` and
``api/`` package (the commonest names in a Celery or FastAPI project) live beside it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_installs_only_the_embedq_name(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("embedq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {
        "embedq",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    for package in ("api", "tasks", "workers", "storage"):
        assert f"embedq/{package}/__init__.py" in names
    assert any(n.startswith("embedq/storage/migrations/versions/0001_") for n in names)


def test_a_project_with_its_own_tasks_and_api_imports_both(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("WHO = 'user tasks'\n")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("WHO = 'user api'\n")
    code = (
        "import tasks, api\n"
        "from embedq.tasks.settings import Settings\n"
        "from embedq.api.cli import main\n"
        "assert tasks.WHO == 'user tasks', tasks.__file__\n"
        "assert api.WHO == 'user api', api.__file__\n"
        "import embedq.tasks, embedq.api\n"
        "assert embedq.tasks.__file__ != tasks.__file__\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
