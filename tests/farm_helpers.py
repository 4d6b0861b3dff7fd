"""Helpers of the tests that run phases on real Celery workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from celery.contrib.testing.worker import start_worker

from sealpool.app import app
from sealpool.metrics import PhaseRun
from sealpool.routing import QUEUE_NAMES, host_queues
from sealpool.store import TERMINAL, PhaseStatus, Sector, SectorState, SectorStore
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool

from helpers import wait_until

S = SectorState
# one host running every phase, several slots for some
FARM_SLOTS = {S.ADD_PIECE: 2, S.PRE_COMMIT_1: 3, S.PRE_COMMIT_2: 1, S.PRE_COMMITTING: 2,
              S.WAIT_SEED: 1, S.COMMIT_1: 1, S.COMMIT_2: 1, S.COMMITTING: 2,
              S.FINALIZE: 1}  # fmt: skip
LEASE_ENDS = {"complete", "retry", "fail", "release", "take-over", "restart", "reticket",
              "abort", "resume"}  # fmt: skip


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


def farm_env_vars(times: dict[str, float]) -> dict[str, str]:
    """Settings of a farm of worker processes whose phases take ``times`` farm seconds."""
    return {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HEARTBEAT_S": "0.3",
        "SEALPOOL_LEASE_S": "2",
        "SEALPOOL_LOST_MESSAGE_S": "3",
        "SEALPOOL_PHASE_SECONDS": json.dumps(times),
    }


@contextmanager
def supervisor_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `sealpool supervisor` process with ``env`` over this one's, logging to ``log``;
    terminated on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sealpool", "supervisor"], env={**os.environ, **env},
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def wait_running(store: SectorStore, ids: Iterable[str], state: SectorState) -> None:
    """Wait (generously: worker processes start first) until one of the sectors runs ``state``."""
    ids = list(ids)
    wait_until(
        lambda: any(
            (s.state, s.status) == (state, PhaseStatus.RUNNING) for s in store.get_many(ids)
        ),
        timeout_s=90,
        what=f"a sector running {state.value}",
    )


def answers(client: redis.Redis) -> bool:
    """Whether the Redis server behind ``client`` answers a PING."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def assert_never_twice_at_once(store: SectorStore, sector_ids: Iterable[str]) -> None:
    """From history: every claim of a phase follows the end of the previous one's lease."""
    for sector_id in sector_ids:
        open_claim = None
        for entry in store.history(sector_id):
            if entry.event == "claim":
                assert open_claim is None, (sector_id, open_claim, entry)
                open_claim = entry
            elif entry.event in LEASE_ENDS:
                open_claim = None


def register_slots(client: redis.Redis, pool: str, host: str, phase: str, count: int) -> SlotPool:
    """``count`` slots of ``phase`` on ``host``, registered (unregister them after)."""
    plans = [SlotPlan(phase, i, None, None, {}) for i in range(count)]
    # a 6 s slot TTL: no test here checks a lost slot, so a stalled beat must not fake one
    slots = SlotPool(client, pool, host, plans, [], [], heartbeat_s=2.0)
    slots.register()
    return slots


def most_at_once(runs: list[PhaseRun]) -> int:
    """The most of ``runs`` that overlapped at any moment."""
    edges = sorted(
        [(r.started_ms, 1) for r in runs] + [(r.ended_ms, -1) for r in runs],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = peak = 0
    for _at, change in edges:
        running += change
        peak = max(peak, running)
    return peak
