"""Two Celery apps with a task that only counts itself done: overhead_bench.py measures
Celery's own cost per message with each (the floor under sealpool's).

* ``noop_app`` (``app``): sealpool's Celery app and settings — its thread pool, prefetch off,
  acknowledged on receipt.
* ``noop_app:plain``: Celery's defaults — prefork, one process per core, prefetch 4 per
  process, JSON.

The task's one ``INCR`` (of the key it is given) lets the benchmark wait until every task
has *finished*, not only left the queue.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from sealpool.app import app

NOOP = "bench.noop"

plain = Celery("noop-plain", broker=os.environ.get("SEALPOOL_REDIS_URL"))
plain.conf.update(task_ignore_result=True)
_client: redis.Redis | None = None


def _done(key: str) -> None:
    """Count one task done at ``key`` (one connection per worker process)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["SEALPOOL_REDIS_URL"])
    _client.incr(key)


@app.task(name=NOOP)
def noop(done: str, **_: Any) -> None:
    """Nothing but the count: the rest of the cost is Celery's and the broker's."""
    _done(done)


@plain.task(name=NOOP)
def plain_noop(done: str, **_: Any) -> None:
    """The same, on Celery's defaults."""
    _done(done)
