"""The reconciler reads which batches wait in the embed queue from real Celery messages in a
real Redis: what tells a stranded batch (its message taken by a worker killed before it began
the batch) from one that merely waits its turn."""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from embedq.tasks import names
from embedq.tasks.broker import CeleryBroker
from tests.services import redis_db

pytestmark = pytest.mark.integration


def test_the_embed_queue_is_read_as_batch_ids() -> None:
    with redis_db() as url:
        sender = Celery(broker=url)
        sender.conf.update(task_serializer="json", accept_content=["json"])
        for batch_id in (7, 18, 1 << 45):
            sender.send_task(
                names.EMBED_BATCH, args=[batch_id], queue=names.EMBED_QUEUE, routing_key="embed"
            )
        sender.send_task(names.CATCH_UP, args=["c"], queue=names.EMBED_QUEUE, routing_key="embed")
        client = redis.Redis.from_url(url)
        client.rpush(names.EMBED_QUEUE, b"not a message")
        broker = CeleryBroker.__new__(CeleryBroker)
        broker.client = client
        assert broker.queued_batches() == frozenset({7, 18, 1 << 45})
        client.delete(names.EMBED_QUEUE)
        assert broker.queued_batches() == frozenset()
        sender.close()
        client.close()
