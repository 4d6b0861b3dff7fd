"""``sealpool worker`` processes from profiles: slot limits, idle/busy, storage, SIGTERM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealpool.app import app
from sealpool.farm import LocalFarm
from sealpool.metrics import phase_runs
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import PhaseStatus, SectorState
from sealpool.worker_profiles.slots import slot_reports

from farm_helpers import FARM_SLOTS, events, most_at_once, wait_for
from helpers import wait_until

S = SectorState


def farm_of(prefix: str, root: Path, phase_seconds: dict[str, float], **options) -> LocalFarm:
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HEARTBEAT_S": "0.5",
        "SEALPOOL_PHASE_SECONDS": json.dumps(phase_seconds),
    }
    return LocalFarm(prefix, ["hostA"], root, slots=FARM_SLOTS, env=env, **options)


def test_burst_never_exceeds_slots_and_files_land_where_configured(
    farm_env: Path, prefix: str
) -> None:
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 30)
    times = {
        "AddPiece": 100,
        "PreCommit1": 600,
        "PreCommit2": 100,
        "Commit1": 20,
        "Commit2": 100,
        "Finalize": 50,
        "PreCommitting": 30,
        "Committing": 30,
    }
    with farm_of(prefix, farm_env / "farm", times, paths_per_host=2) as farm:
        farm.wait_ready()
        for sector in sectors:
            start(store, sector.id, actor="test")
        done = wait_for(store, [s.id for s in sectors], timeout_s=150)
    assert [s.state for s in done] == [S.PROVING] * 30
    runs = [run for s in done for run in phase_runs(s.id, store.history(s.id))]
    for phase, slots in FARM_SLOTS.items():
        if phase is not S.WAIT_SEED:
            assert most_at_once([r for r in runs if r.phase == phase.value]) <= slots, phase
    assert most_at_once([r for r in runs if r.phase == "PreCommit1"]) == 3  # and all are used
    temp_roots, sealed_roots = (set(paths) for paths in farm.host_dirs("hostA"))
    assert {Path(s.temp_path).parent for s in done} == {p.resolve() for p in temp_roots}
    assert {Path(s.sealed_path).parents[1] for s in done} <= {p.resolve() for p in sealed_roots}
    for sector in done:
        assert Path(sector.sealed_path).is_file()  # <lotus storage path>/sealed/s-t0…
    assert all(not any(root.iterdir()) for root in temp_roots)  # every scratch freed
    assert runtime(prefix).scratch.reservations("hostA") == {}


def test_workers_report_idle_busy_lost_like_celery_inspect(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 4)
    times = {"AddPiece": 10, "PreCommit1": 60000}  # PC1 takes 60 s of wall time: none ends
    farm = farm_of(prefix, farm_env / "farm", times)
    with farm:
        farm.wait_ready()
        reports = slot_reports(store.client, prefix)
        assert len(reports) == sum(FARM_SLOTS.values())
        assert {r.state for r in reports} == {"idle"}
        for sector in sectors:
            start(store, sector.id, actor="test")
        wait_for(store, [s.id for s in sectors], done=[S.PRE_COMMIT_1], timeout_s=60)
        seen: dict[str, set] = {}

        def busy_is_active() -> bool:
            seen["busy"] = {
                r.sector for r in slot_reports(store.client, prefix) if r.state == "busy"
            }
            node = farm.node(S.PRE_COMMIT_1, "hostA")
            active = app.control.inspect(destination=[node], timeout=5).active() or {}
            seen["running"] = {t["kwargs"]["sector_id"] for ts in active.values() for t in ts}
            return len(seen["busy"]) == 3 and seen["busy"] == seen["running"]

        wait_until(busy_is_active, timeout_s=60, what="3 busy PC1 slots, Celery's active ones")
        busy = seen["busy"]  # three PC1 slots, one sector waits
        waiting = [
            s for s in store.get_many(s.id for s in sectors) if s.status is PhaseStatus.QUEUED
        ]
        assert len(waiting) == 1 and waiting[0].id not in busy
        farm.kill(farm.node(S.PRE_COMMIT_1, "hostA"))  # kill -9: no goodbye
        states: dict[str, str] = {}

        def pc1_lost() -> bool:  # after 3 missed heartbeats of 0.5 s
            states.clear()
            for r in slot_reports(store.client, prefix):
                if r.phase in ("PreCommit1", "PreCommit2"):
                    states[r.phase] = r.state
            return states.get("PreCommit1") == "lost"

        wait_until(pc1_lost, timeout_s=30, what="PC1 slots lost")
        assert states == {"PreCommit1": "lost", "PreCommit2": "idle"}


def test_sigterm_mid_phase_hands_sectors_back_and_loses_none(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 2)
    times = {"AddPiece": 10, "PreCommit1": 30000}  # 30 s of wall time: stopped midway
    with farm_of(prefix, farm_env / "farm", times) as farm:
        farm.wait_ready()
        for sector in sectors:
            start(store, sector.id, actor="test")
        wait_for(store, [s.id for s in sectors], done=[S.PRE_COMMIT_1], timeout_s=60)
        wait_until(
            lambda: (
                {s.status for s in store.get_many(s.id for s in sectors)} == {PhaseStatus.RUNNING}
            ),
            timeout_s=60,
            what="both sectors running PC1",
        )
    for sector in store.get_many(s.id for s in sectors):
        assert (sector.state, sector.status) == (S.PRE_COMMIT_1, PhaseStatus.QUEUED)
        (release,) = events(store, sector.id, "release")
        assert release.detail == "worker shutting down"
        (claim,) = [h for h in events(store, sector.id, "claim") if h.from_state == "PreCommit1"]
        assert release.at_ms < claim.at_ms + 30_000  # handed back, not the 30 s PC1 waited out
    assert slot_reports(store.client, prefix) == []  # a clean stop is not a lost host
    times["PreCommit1"] = 100
    with farm_of(prefix, farm_env / "farm", times) as farm:
        farm.wait_ready()
        done = wait_for(store, [s.id for s in sectors], timeout_s=60)
    assert [s.state for s in done] == [S.PROVING] * 2
    for sector in done:
        claims = [h for h in events(store, sector.id, "claim") if h.from_state == "PreCommit1"]
        assert len(claims) == 2 and sector.host == "hostA"


pytestmark = pytest.mark.slow
