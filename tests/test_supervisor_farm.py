"""The supervisor with real worker processes: a dead host, and a pool kept at target."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sealpool.farm import DEMO_SLOTS, LocalFarm
from sealpool.metrics import phase_runs
from sealpool.runtime import runtime
from sealpool.store import PhaseStatus, SectorState
from sealpool.supervisor import Supervisor
from sealpool.worker_profiles.slots import slot_reports

from farm_helpers import wait_for
from helpers import wait_until

S = SectorState
pytestmark = pytest.mark.slow


@contextmanager
def supervising(pool: str, every_s: float = 0.2) -> Iterator[Supervisor]:
    """A supervisor ticking in a thread for the duration of the block."""
    boss = Supervisor(runtime(pool), "test-supervisor")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            boss.tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield boss
    finally:
        stop.set()
        thread.join()
        boss.lease.resign()


def test_host_killed_mid_pc1_sector_restarts_elsewhere(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lease and a grace a loaded machine can't lapse on a live host (lease < grace, as before)
    monkeypatch.setenv("SEALPOOL_LEASE_S", "5")
    times = {"PreCommit1": 5000, "AddPiece": 10}  # PC1: 5 s of wall time
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HEARTBEAT_S": "0.3",
        "SEALPOOL_LEASE_S": "5",
        "SEALPOOL_PHASE_SECONDS": json.dumps(times),
    }
    monkeypatch.setenv("SEALPOOL_PHASE_SECONDS", json.dumps(times))
    monkeypatch.setenv("SEALPOOL_HEARTBEAT_S", "0.3")
    monkeypatch.setenv("SEALPOOL_HOST_LOST_GRACE_S", "10")  # every process silent this long
    runtime.cache_clear()
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 2)
    with LocalFarm(prefix, ["hostA", "hostB"], farm_env / "farm", env=env) as farm:
        farm.wait_ready()
        with supervising(prefix):
            wait_for(store, [s.id for s in sectors], done=[S.PRE_COMMIT_1], timeout_s=30)
            wait_until(
                lambda: (
                    {s.status for s in store.get_many(s.id for s in sectors)}
                    == {PhaseStatus.RUNNING}
                ),
                timeout_s=60,
                what="both sectors running PC1",
            )
            victim = next(s for s in store.get_many(s.id for s in sectors))
            dead_host = victim.host
            farm.kill_host(dead_host)
            done = wait_for(store, [s.id for s in sectors], timeout_s=120)
    assert [s.state for s in done] == [S.PROVING, S.PROVING]
    moved = store.get(victim.id)
    assert moved.host != dead_host
    assert [h.event for h in store.history(victim.id)].count("take-over") == 1
    assert store.counters()["restarted"] >= 1
    runs = phase_runs(moved.id, store.history(moved.id))
    last_ap = max(i for i, r in enumerate(runs) if r.phase == "AddPiece")
    assert {
        r.host
        for r in runs[last_ap:]
        if r.phase in ("PreCommit1", "PreCommit2", "Commit1", "Finalize")
    } == {moved.host}


def test_pool_stays_at_target(farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CC_FILL": "true",
        "LOOKAHEAD": "1",
        "CREATE_INTERVAL_S": "60",
        "HEARTBEAT_S": "0.3",
    }.items():
        monkeypatch.setenv(f"SEALPOOL_{name}", value)
    runtime.cache_clear()
    store = runtime(prefix).store
    times = {"PreCommit1": 3000, "AddPiece": 60}
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HEARTBEAT_S": "0.3",
        "SEALPOOL_PHASE_SECONDS": json.dumps(times),
    }
    samples, busy = [], []
    slots = {**DEMO_SLOTS, S.PRE_COMMIT_1: 3}

    def busy_pc1_slots() -> int:
        reports = slot_reports(store.client, prefix)
        return sum(1 for r in reports if r.phase == "PreCommit1" and r.state == "busy")

    with LocalFarm(prefix, ["hostA"], farm_env / "farm", env=env, slots=slots) as farm:
        farm.wait_ready()
        with supervising(prefix, every_s=0.1):
            # warm-up: the first three sectors reach PC1 and every PC1 slot works
            wait_until(lambda: busy_pc1_slots() == 3, timeout_s=60, what="3 PC1 slots busy")
            for _ in range(40):  # 12 s of wall time: 3.3 h of farm time
                counts = {s: sum(k.values()) for s, k in store.counts().items()}
                samples.append(counts)
                busy.append(busy_pc1_slots())  # the slots' own state: queued sectors don't count
                time.sleep(0.3)
            # and sectors keep coming out the other end
            wait_until(
                lambda: sum(store.counts()[S.PROVING].values()) >= 6,
                timeout_s=60,
                what="6 sectors in Proving",
            )
    # no PC1 slot idles: all three slots busy (a PC1 phase running in each) in 90 % of
    # samples; the rest are hand-overs, a slot between one sector's PC1 and the next's
    assert sum(1 for n in busy if n == 3) >= 0.9 * len(busy), busy
    ahead = [c[S.ADD_PIECE] + c[S.PENDING] for c in samples]
    assert max(c[S.PRE_COMMIT_1] + c[S.ADD_PIECE] for c in samples) <= 3 + 1  # no flood
    assert max(ahead) <= 3 + 1  # free PC1 slots + look-ahead at most
