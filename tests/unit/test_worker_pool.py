"""Which Celery pool a worker runs, and how many tasks at once."""

from __future__ import annotations

import pytest

from embedq.tasks.settings import Settings
from embedq.tasks.worker_pool import GPU_EMBED_THREADS, embed_threads, worker_pool


def test_embed_workers_run_two_tasks_at_once_on_a_gpu_and_one_on_a_cpu() -> None:
    assert embed_threads(None, "cuda") == embed_threads(None, "cuda:1") == GPU_EMBED_THREADS == 2
    assert embed_threads(None, "cpu") == 1
    assert embed_threads(3, "cpu") == 3 and embed_threads(1, "cuda") == 1
    assert worker_pool(["embed"], 1, None, "cuda") == ("threads", 2)
    assert worker_pool(["embed"], 1, None, "cpu") == ("solo", 1)
    assert worker_pool(["embed"], 1, 4, "cpu") == ("threads", 4)
    assert worker_pool(["embed", "default"], 1, None, "cuda") == ("threads", 2)


def test_the_index_writer_is_always_alone_and_only_the_default_queue_forks() -> None:
    assert worker_pool(["index"], 1, 4, "cuda") == ("solo", 1)
    assert worker_pool(["default"], 4, None, "cuda") == ("prefork", 4)
    assert worker_pool(["default"], 1, None, "cpu") == ("solo", 1)
    # --concurrency is for the default queue; an embed worker takes threads from the setting.
    assert worker_pool(["embed"], 4, None, "cpu") == ("solo", 1)


def test_the_setting_is_read_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_EMBED_THREADS", "2")
    assert Settings().embed_threads == 2
    monkeypatch.setenv("EMBEDQ_EMBED_THREADS", "0")
    with pytest.raises(ValueError, match="embed_threads"):
        Settings()
