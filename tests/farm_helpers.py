"""Helpers of the tests that run phases on real Celery workers."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from celery.contrib.testing.worker import start_worker

from sealpool.app import app
from sealpool.routing import QUEUE_NAMES, host_queues
from sealpool.store import TERMINAL, Sector, SectorState, SectorStore


@contextmanager
def worker(
    pool: str,
    phases: Iterable[SectorState] = tuple(QUEUE_NAMES),
    concurrency: int = 4,
    host: str = "hostA",
) -> Iterator[None]:
    """A real Celery worker in a thread, consuming the shared and ``host`` queues."""
    with start_worker(
        app,
        pool=app.conf.worker_pool,
        concurrency=concurrency,
        perform_ping_check=False,
        queues=host_queues(pool, list(phases), host),
        hostname=f"test-{pool}@{host}",
        shutdown_timeout=30,
    ):
        yield


def wait_for(
    store: SectorStore,
    ids: Iterable[str],
    done: Iterable[SectorState] = TERMINAL,
    timeout_s: float = 60.0,
) -> list[Sector]:
    """Wait until every sector is in one of ``done`` states; the sectors then."""
    ids, done = list(ids), set(done)
    deadline = time.monotonic() + timeout_s
    while True:
        sectors = store.get_many(ids)
        if all(sector.state in done for sector in sectors):
            return sectors
        if time.monotonic() > deadline:
            states = {sector.id: str(sector.state) for sector in sectors}
            raise AssertionError(f"sectors not in {sorted(map(str, done))}: {states}")
        time.sleep(0.1)


def events(store: SectorStore, sector_id: str, event: str) -> list:
    return [h for h in store.history(sector_id) if h.event == event]
