"""Drain, pause and resume hosts and phases through Celery's remote control, on real
``sealpool worker`` processes: running phases finish, nothing new is taken until resume, a
restarted worker stays paused, and the supervisor counts only slots that take work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.app import app
from sealpool.cli import cli
from sealpool.farm import LocalFarm
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import PhaseStatus, SectorState, SectorStore
from sealpool.supervisor.stuck import phases_paused_everywhere, queue_stuck_reason
from sealpool.supervisor.tick import Supervisor
from sealpool.worker_profiles.slots import server_ms, slot_reports

from farm_helpers import events, wait_for
from helpers import wait_until

S = SectorState
# farm seconds: 12 s of wall time at the farm's time scale, time enough for a loaded machine
# to answer `workers drain` while the first sector's PC1 still runs
PC1_S = 12_000


def farm_of(prefix: str, root: Path, hosts: list[str], slots: dict[SectorState, int]) -> LocalFarm:
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_HEARTBEAT_S": "0.5",
        "SEALPOOL_PHASE_SECONDS": json.dumps({"AddPiece": 10, "PreCommit1": PC1_S}),
    }
    return LocalFarm(prefix, hosts, root, slots=slots, env=env)


def sealpool(*args: str) -> dict:
    """``sealpool ARGS --json``, checked to exit 0; its JSON."""
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def shown(*args: str) -> str:
    """``sealpool ARGS`` as a person reads it on an 80-column terminal, checked to fit."""
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80, result.output
    return result.output


def consumed(node: str) -> set[str]:
    """The queues Celery's worker ``node`` consumes now (its own answer)."""
    replies = app.control.inspect(destination=[node], timeout=10).active_queues() or {}
    return {queue["name"] for queue in replies[node]}


def states(store: SectorStore, host: str) -> dict[str, str]:
    return {r.phase: r.state for r in slot_reports(store.client, store.prefix) if r.host == host}


def claimed_at(store: SectorStore, sector_id: str, phase: SectorState) -> int:
    (claim,) = [h for h in events(store, sector_id, "claim") if h.from_state == phase.value]
    return claim.at_ms


def test_drain_finishes_the_running_phase_and_takes_nothing_new_until_resume(
    farm_env: Path, prefix: str
) -> None:
    store = runtime(prefix).store
    first, later = store.create_many("f01000", "cc", 2)
    with farm_of(prefix, farm_env / "farm", ["hostA"], {S.ADD_PIECE: 1, S.PRE_COMMIT_1: 1}) as farm:
        farm.wait_ready()
        start(store, first.id, actor="test")
        wait_until(
            lambda: (
                store.get(first.id).state is S.PRE_COMMIT_1
                and store.get(first.id).status is PhaseStatus.RUNNING
            ),
            timeout_s=60,
            what="first sector running PC1",
        )
        now = sealpool("workers", "drain", "hostA")
        assert now["answered"] == ["ap@hostA", "pc1@hostA"] and not now["quiet"]
        assert [(r["phase"], r["sector"]) for r in now["running"]] == [("PreCommit1", first.id)]
        table = shown("workers")
        assert "draining" in table and "paused" in table, table
        assert f"hostA: 1 running: pc1 {first.id}" in shown("workers", "drain", "hostA")

        done = sealpool("workers", "drain", "hostA", "--wait", "--timeout", "60")
        assert done["quiet"] and done["running"] == []
        assert states(store, "hostA") == {"AddPiece": "paused", "PreCommit1": "paused"}
        assert "hostA: quiet" in shown("workers", "drain", "hostA", "--wait")
        finished = store.get(first.id)  # PC1 ran to its end, not handed back
        assert (finished.state, events(store, first.id, "release")) == (S.PRE_COMMIT_2, [])

        start(store, later.id, actor="test")  # queued after the drain: nobody takes it
        assert consumed(farm.node(S.ADD_PIECE, "hostA")) == set()
        assert consumed(farm.node(S.PRE_COMMIT_1, "hostA")) == set()
        resumed_ms = server_ms(store.client)
        assert sealpool("workers", "resume", "hostA")["answered"] == ["ap@hostA", "pc1@hostA"]
        wait_for(store, [later.id], done=[S.PRE_COMMIT_2], timeout_s=60)
        assert claimed_at(store, later.id, S.ADD_PIECE) >= resumed_ms  # it waited for resume
        wait_until(  # the slot's state follows its phase's end by a write
            lambda: states(store, "hostA") == {"AddPiece": "idle", "PreCommit1": "idle"},
            what="hostA's slots idle and taking work",
        )


def test_paused_phase_stays_paused_across_a_worker_restart_until_resumed(
    farm_env: Path, prefix: str
) -> None:
    store = runtime(prefix).store
    (sector,) = store.create_many("f01000", "cc", 1)
    with farm_of(prefix, farm_env / "farm", ["hostA"], {S.ADD_PIECE: 1, S.PRE_COMMIT_1: 1}) as farm:
        farm.wait_ready()
        pc1, ap = farm.node(S.PRE_COMMIT_1, "hostA"), farm.node(S.ADD_PIECE, "hostA")
        wrong = CliRunner().invoke(cli, ["workers", "pause", "hostA", "--phase", "pc3"])
        assert wrong.exit_code == 2 and "unknown phase 'pc3'; expected one of:" in wrong.output
        paused = sealpool("workers", "pause", "hostA", "--phase", "pc1")
        assert paused["queues"] == [f"{prefix}.pc1", f"{prefix}.pc1@hostA"]
        assert paused["answered"] == [pc1]
        farm.kill(pc1)  # crashed; started again as the launcher would
        farm.revive(S.PRE_COMMIT_1, "hostA")
        farm.wait_ready()
        assert consumed(pc1) == set()  # came back paused
        assert consumed(ap) == {f"{prefix}.ap", f"{prefix}.ap@hostA"}  # the other phase runs on

        start(store, sector.id, actor="test")  # AddPiece runs, PC1 waits on the host's queue
        wait_until(
            lambda: (
                (store.get(sector.id).state, store.get(sector.id).status)
                == (S.PRE_COMMIT_1, PhaseStatus.QUEUED)
            ),
            what="AddPiece done, PC1 queued",
        )
        wait_until(lambda: states(store, "hostA")["PreCommit1"] == "paused", what="paused slot")
        listed = {row["id"]: row.get("stuck") for row in sealpool("sectors", "list")}
        assert listed[sector.id] == "PreCommit1 paused on hostA"
        assert sealpool("pool", "stats")["paused_everywhere"] == ["PreCommit1"]
        assert "paused on every host that runs it: PreCommit1" in shown("pool", "stats")
        resumed_ms = server_ms(store.client)
        resumed = sealpool("workers", "resume", "hostA", "--phase", "PreCommit1")
        assert resumed["answered"] == [pc1] and not resumed["paused"]
        assert sealpool("pool", "stats")["paused_everywhere"] == []
        wait_for(store, [sector.id], done=[S.PRE_COMMIT_2], timeout_s=60)
        assert claimed_at(store, sector.id, S.PRE_COMMIT_1) >= resumed_ms
        assert consumed(pc1) == {f"{prefix}.pc1", f"{prefix}.pc1@hostA"}


def test_supervisor_starts_sectors_only_for_pc1_slots_that_take_work(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_LOOKAHEAD", "0")
    monkeypatch.setenv("SEALPOOL_CREATE_INTERVAL_S", "0")
    runtime.cache_clear()
    rt = runtime(prefix)
    rt.store.create_many("f01000", "cc", 10)
    boss = Supervisor(rt, "sup")
    with farm_of(prefix, farm_env / "farm", ["hostA", "hostB"], {S.PRE_COMMIT_1: 2}) as farm:
        farm.wait_ready()
        assert sealpool("workers", "pause", "hostB", "--phase", "pc1")["answered"] == ["pc1@hostB"]
        assert consumed(farm.node(S.PRE_COMMIT_1, "hostB")) == set()
        assert len(boss.tick().started) == 2  # hostA's 2 free slots; hostB's 2 are paused
        assert boss.tick().started == []
        current = {row["phase"]: row["current_slots"] for row in sealpool("ratio")["phases"]}
        assert current["PreCommit1"] == 2

        sealpool("workers", "resume", "hostB", "--phase", "pc1")
        assert len(boss.tick().started) == 2  # hostB's slots count again


def test_a_phase_paused_on_every_host_that_runs_it_is_stuck() -> None:
    live = {("hostA", "Commit2"), ("hostB", "Commit2"), ("hostA", "PreCommit2")}
    one = {("hostA", "Commit2"), ("hostA", "PreCommit2")}
    assert queue_stuck_reason(S.COMMIT_2, None, live, paused=one) is None  # hostB takes it
    assert queue_stuck_reason(S.COMMIT_2, None, live, paused=live) == "Commit2 paused on every host"
    assert queue_stuck_reason(S.PRE_COMMIT_2, "hostA", live, paused=one) == (
        "PreCommit2 paused on hostA"  # its temp data is there: no other host will do
    )
    counts = {S.COMMIT_2: {"cc": 1}, S.PRE_COMMIT_2: {"cc": 1}, S.COMMIT_1: {"cc": 1}}
    phases = [S.PRE_COMMIT_2, S.COMMIT_1, S.COMMIT_2]
    assert phases_paused_everywhere(counts, live, one, phases) == ["PreCommit2"]
    assert phases_paused_everywhere(counts, live, live, phases) == ["PreCommit2", "Commit2"]
