"""Names that cross processes: queues, task names and Redis keys, in one place.

A producer, a worker and the reconciler agree on these and nothing else; changing one is
changing the protocol between them.
"""

from __future__ import annotations

EMBED_QUEUE = "embed"
INDEX_QUEUE = "index"
DEFAULT_QUEUE = "default"
QUEUES = (EMBED_QUEUE, INDEX_QUEUE, DEFAULT_QUEUE)
"""Every queue a worker may consume: GPU work, the single index writer, everything else."""

EMBED_BATCH = "embedq.embed_batch"
CATCH_UP = "embedq.catch_up"
INGEST_FILE = "embedq.ingest_file"
ANALYSE = "embedq.analyse"
RECONCILE = "embedq.reconcile"
DELIVER_CALLBACK = "embedq.deliver_callback"
TASK_QUEUES = {
    EMBED_BATCH: EMBED_QUEUE,
    CATCH_UP: INDEX_QUEUE,
    INGEST_FILE: DEFAULT_QUEUE,
    ANALYSE: DEFAULT_QUEUE,
    RECONCILE: DEFAULT_QUEUE,
    DELIVER_CALLBACK: DEFAULT_QUEUE,
}
"""Where each task goes unless the sender names another queue (analysis kinds do)."""

CATCH_UP_KEY = "embedq:catch-up:{}"
"""Set while a catch-up request for a collection is queued: requests coalesce."""
EPOCH_KEY = "embedq:broker-epoch"
"""Set once the reconciler has run against this Redis; missing means Redis lost its state."""
RECONCILE_QUEUED_KEY = "embedq:reconcile:queued"
RECONCILE_RAN_KEY = "embedq:reconcile:ran"
HEARTBEAT_KEY = "embedq:worker:{}"
"""One per live worker process, refreshed by its heartbeat thread."""
