"""How a worker runs its tasks: which Celery pool, how many at once."""

from __future__ import annotations

from collections.abc import Sequence

from embedq.tasks.names import DEFAULT_QUEUE, EMBED_QUEUE, INDEX_QUEUE

GPU_EMBED_THREADS = 2
"""On a GPU one task reads SQL and tokenises the next batch while another is in its forward
pass (the model runs one pass at a time); on a CPU the forward pass already takes every core."""


def embed_threads(setting: int | None, device: str) -> int:
    """Embed tasks one worker runs at once: the setting, else 2 on a GPU and 1 on a CPU."""
    if setting is not None:
        return setting
    return 1 if device == "cpu" else GPU_EMBED_THREADS


def worker_pool(
    queues: Sequence[str], concurrency: int, threads: int | None, device: str
) -> tuple[str, int]:
    """(pool, concurrency) for a worker of ``queues``.

    The default queue alone may fork processes (``--concurrency``); the embed queue runs
    threads in one process (one model in memory, nothing forks after CUDA is up); the index
    writer, and any other mix, runs one task at a time.
    """
    if list(queues) == [DEFAULT_QUEUE]:
        return ("prefork", concurrency) if concurrency > 1 else ("solo", 1)
    if EMBED_QUEUE in queues and INDEX_QUEUE not in queues:
        count = embed_threads(threads, device)
        if count > 1:
            return "threads", count
    return "solo", 1
