"""One sector, one runner: the races and fault paths around the store's scripts.

Each test reproduces one way a sector could be run twice, lost, or wiped, against a real
Redis (and, where a message is involved, a real Celery worker), and checks it can't happen.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from sealpool import server
from sealpool.cli import cli
from sealpool.deals import DealBook
from sealpool.errors import DealTaken, IllegalTransition, NotLeader, PhaseError, StaleToken
from sealpool.runtime import runtime
from sealpool.scratch_lease import check_scratch, stamp_scratch
from sealpool.sealing_tasks.dispatch import dispatch, recover_lost, start
from sealpool.sealing_tasks.lease_keeper import LeaseKeeper
from sealpool.store import PhaseStatus, Randomness, Sector, SectorState, SectorStore
from sealpool.supervisor import Supervisor
from sealpool.supervisor.leader import LeaderLease
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool, holder_alive, live_consumers, lost_hosts

from farm_helpers import events, wait_for, worker
from helpers import place, wait_until

S = SectorState


def test_a_second_start_is_refused(store: SectorStore) -> None:
    sector = store.create("f01000", "cc")
    started = store.start(sector.id, actor="sup-a")
    assert store.claim(sector.id, S.ADD_PIECE, "w", message=started.msg_id)
    with pytest.raises(IllegalTransition, match="AddPiece → AddPiece"):
        store.start(sector.id, actor="sup-b")
    history = store.history(sector.id)
    assert [h.event for h in history].count("start") == 1
    assert store.get(sector.id).status is PhaseStatus.RUNNING


def test_a_deal_goes_into_one_sector_under_racing_creators(store: SectorStore) -> None:
    book = DealBook(store.client, store.prefix)
    for deal_id in (1, 2, 3):
        book.add(deal_id, 1 << 30)
    made, refused = [], []
    barrier = threading.Barrier(8)

    def create(worker: int) -> None:
        barrier.wait()
        try:
            sector = store.create("f01000", "deal", deal_ids=[1, 2, 3], request_id=f"r{worker}")
            made.append((worker, sector))
        except DealTaken:
            refused.append(worker)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len(refused) == 7
    (winner, sector), *_ = made
    assert book.waiting() == [] and book.sector_of(2) == sector.id
    assert store.counts()[S.PENDING]["deal"] == 1
    again = store.create("f01000", "deal", deal_ids=[1, 2, 3], request_id=f"r{winner}")
    assert again.id == sector.id  # the winner's retried request returns its sector


def test_renew_after_expiry_is_refused_and_the_lease_stays_expired(store: SectorStore) -> None:
    sector = place(store, S.PRE_COMMIT_2)
    lease = store.claim(sector.id, S.PRE_COMMIT_2, "w", lease_s=0.2)
    assert lease is not None
    wait_until(lambda: store.expired_leases() == [sector.id])
    with pytest.raises(StaleToken, match="expired"):
        store.renew(lease)
    assert store.expired_leases() == [sector.id]  # still there for the supervisor


def test_a_worker_that_cannot_reach_redis_fences_itself(tmp_path: Path) -> None:
    info = server.start(tmp_path / "redis")
    client = redis.Redis.from_url(info.url, decode_responses=True, socket_timeout=1.0)
    store = SectorStore(client, prefix="fence", lease_s=3.0)
    sector = place(store, S.PRE_COMMIT_1)
    claim = store.claim(sector.id, S.PRE_COMMIT_1, "w")
    assert claim is not None
    with LeaseKeeper(store, claim) as keeper:
        server.stop(tmp_path / "redis")
        stopped = time.monotonic()
        assert keeper.lost.wait(30), "the phase went on without a lease"
        fenced_after = time.monotonic() - stopped
    assert keeper.cancelled.is_set() and "local deadline" in keeper.reason
    assert fenced_after < store.lease_s  # before the lease can expire in Redis


def test_a_stale_attempt_never_writes_over_the_live_ones_scratch(tmp_path: Path) -> None:
    scratch = tmp_path / "f01000-1"
    stamp_scratch(scratch, 41, "PC1 (frozen attempt)")
    stamp_scratch(scratch, 42, "PC1 (take-over)")
    with pytest.raises(PhaseError, match="belongs to attempt 42"):
        check_scratch(scratch, 41, "PC1 (frozen attempt)")
    with pytest.raises(PhaseError, match="newer attempt"):
        stamp_scratch(scratch, 41, "PC1 (frozen attempt)")
    check_scratch(scratch, 42, "PC1 (take-over)")


def test_a_lost_gpu_lock_stops_the_phase(client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    plans = [SlotPlan("PreCommit2", 0, None, (0,), {}, locks=("gpu0",))]
    slots = SlotPool(client, prefix, "hostA", plans, [tmp_path], [tmp_path], heartbeat_s=0.2)
    slots.register()
    lost = threading.Event()
    try:
        with slots.acquire("f01000-1", "PreCommit2", lost):
            client.delete(slots.keys.gpu_lock("hostA", "gpu0"))  # e.g. expired in an outage
            assert lost.wait(30), "the phase kept the GPU without its lock"
    finally:
        slots.unregister()


def test_a_superseded_message_never_claims(store: SectorStore) -> None:
    sector = store.start(store.create("f01000", "cc").id, actor="t")
    old = sector.msg_id
    raised = store.prioritize(sector.id, 0, "sup", "deadline")
    assert raised is not None and raised.msg_id != old
    assert store.claim(sector.id, S.ADD_PIECE, "late", message=old) is None
    assert store.claim(sector.id, S.ADD_PIECE, "w", message=raised.msg_id) is not None


def test_recovery_replaces_a_lost_message_and_leaves_a_queued_one(
    farm_env: Path, prefix: str
) -> None:
    store = runtime(prefix).store
    lost, backlog = (store.start(store.create("f01000", "cc").id, actor="t") for _ in range(2))
    dispatch(store, backlog)  # waits in its queue behind a long backlog: not lost
    dispatch(store, lost)
    queue = f"{prefix}.ap:9"  # CC AddPiece's priority step
    taken = [m for m in store.client.lrange(queue, 0, -1) if lost.msg_id in m]
    assert store.client.lrem(queue, 1, taken[0]) == 1  # a worker took it, died unclaimed
    late = store.now_ms() + 1
    wait_until(lambda: store.now_ms() > late)
    resent = recover_lost(store, actor="sup", bind_host=True, lost_ms=0, hosts=["hostA"])
    assert resent == [lost.id]
    assert store.get(backlog.id).msg_id == backlog.msg_id  # never duplicated
    assert store.get(lost.id).msg_id != lost.msg_id
    assert store.claim(lost.id, S.ADD_PIECE, "late", message=lost.msg_id) is None


def test_a_countdown_held_by_a_dead_worker_process_is_replaced(
    farm_env: Path, prefix: str, client: redis.Redis, other_process: Callable[[str, str], int]
) -> None:
    store = runtime(prefix).store
    sector = store.start(store.create("f01000", "cc").id, actor="t")
    holder_pid = other_process("hostA", "AddPiece")
    holder = f"hostA|AddPiece|{holder_pid}@{socket.gethostname()}"
    alive = functools.partial(holder_alive, client, prefix)

    def recover() -> list[str]:
        late = store.now_ms() + 1
        wait_until(lambda: store.now_ms() > late)
        return recover_lost(
            store, actor="s", bind_host=True, lost_ms=0, hosts=[], holder_alive=alive
        )

    with worker(prefix, phases=[S.ADD_PIECE], concurrency=1):
        hold_for_an_hour(store, sector)
        wait_until(lambda: store.in_broker([sector.msg_id], [])[1] == {sector.msg_id})
        assert store.message_held(sector.id, sector.msg_id, holder)  # as `holder` took it
        assert recover() == []  # held by a live process: it will run it
        os.kill(holder_pid, signal.SIGKILL)  # it dies: kombu would return it in an hour
        wait_until(lambda: not alive(holder))
        assert recover() == [sector.id]
        wait_for(store, [sector.id], done=[S.PRE_COMMIT_1])  # the new message ran at once
    assert [h.event for h in store.history(sector.id)].count("claim") == 1


def hold_for_an_hour(store: SectorStore, sector: Sector) -> None:
    """Send the sector's (due) message so that the worker taking it holds it in its timer
    for an hour, past its due time: as a worker holds a countdown, seen later."""
    dispatch(store, sector, now_ms=(sector.msg_at_ms or 0) - 3_600_000)


def test_a_dead_phase_process_does_not_make_its_host_lost(
    farm_env: Path,
    prefix: str,
    client: redis.Redis,
    other_process: Callable[[str, str], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALPOOL_HOST_LOST_GRACE_S", "600")
    monkeypatch.setenv("SEALPOOL_HEARTBEAT_S", "0.2")  # as the processes below beat
    rt = runtime(prefix)
    pc1 = other_process("hostA", "PreCommit1")
    other_process("hostA", "Commit2")  # hostA's C2 process lives on
    sector = place(rt.store, S.PRE_COMMIT_1)
    assert rt.store.claim(sector.id, S.PRE_COMMIT_1, "pc1-proc", lease_s=0.1, host="hostA")
    os.kill(pc1, signal.SIGKILL)
    wait_until(lambda: ("hostA", "PreCommit1") not in live_consumers(client, prefix, 1.0))
    wait_until(lambda: rt.store.expired_leases() == [sector.id])
    report = Supervisor(rt, "sup").tick()
    assert report.took_over == [sector.id] and report.restarted == []
    again = rt.store.get(sector.id)
    assert (again.state, again.status, again.host) == (S.PRE_COMMIT_1, PhaseStatus.QUEUED, "hostA")
    listed = CliRunner().invoke(cli, ["sectors", "list", "--json"])  # farm_env: this pool
    stuck = {row["id"]: row.get("stuck") for row in json.loads(listed.output)}
    assert stuck[sector.id] == "no live PreCommit1 worker on hostA"


@pytest.mark.parametrize("state", [S.PRE_COMMITTING, S.WAIT_SEED, S.COMMIT_1, S.FINALIZE], ids=str)
def test_a_heartbeat_gap_never_restarts_a_precommitted_sector(
    farm_env: Path,
    prefix: str,
    client: redis.Redis,
    other_process: Callable[[str, str], int],
    state: SectorState,
) -> None:
    rt = runtime(prefix)
    worker_pid = other_process("hostA", state.value)
    sector = place(rt.store, state)
    rt.store.move(
        sector.id,
        state,
        actor="t",
        updates={"host": "hostA"},
        sources=[state],
        expected_version=sector.version,
    )
    assert rt.store.claim(sector.id, state, "w", lease_s=0.1)
    os.kill(worker_pid, signal.SIGKILL)  # silent for more than 3 heartbeats, less than grace
    wait_until(lambda: not live_consumers(client, prefix, 1.0))
    wait_until(lambda: rt.store.expired_leases() == [sector.id])
    report = Supervisor(rt, "sup").tick()
    assert report.restarted == [] and report.failed == [] and report.took_over == [sector.id]
    again = rt.store.get(sector.id)
    assert (again.state, again.status) == (state, PhaseStatus.QUEUED)
    assert not events(rt.store, sector.id, "restart")


def test_a_host_lost_after_the_precommit_fails_its_sector_with_the_reason(
    farm_env: Path,
    prefix: str,
    client: redis.Redis,
    other_process: Callable[[str, str], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALPOOL_HOST_LOST_GRACE_S", "0.5")
    rt = runtime(prefix)
    worker_pid = other_process("hostA", "Commit1")
    sector = place(rt.store, S.COMMIT_1)
    assert rt.store.claim(sector.id, S.COMMIT_1, "w", lease_s=0.1, host="hostA")
    os.kill(worker_pid, signal.SIGKILL)
    wait_until(lambda: lost_hosts(client, prefix, 0.5) == {"hostA"})
    wait_until(lambda: rt.store.expired_leases() == [sector.id])
    assert Supervisor(rt, "sup").tick().failed == [sector.id]
    failed = rt.store.get(sector.id)
    assert failed.state is S.FAILED and "after the precommit" in (failed.last_error or "")
    assert not events(rt.store, sector.id, "restart")


def test_a_supervisor_that_lost_the_lead_starts_nothing(store: SectorStore) -> None:
    first = LeaderLease(store.client, store.prefix, "a", lease_s=0.2)
    second = LeaderLease(store.client, store.prefix, "b", lease_s=30)
    assert first.hold()
    stale_fence = first.fence
    wait_until(second.hold)  # a's lease ran out while it was paused mid-tick
    sector = store.create("f01000", "cc")
    with pytest.raises(NotLeader):
        store.start(sector.id, actor="a", leader=stale_fence)
    with pytest.raises(NotLeader):
        store.create("f01000", "cc", actor="a", leader=stale_fence)
    assert store.get(sector.id).state is S.PENDING
    assert start(store, sector.id, actor="b", leader=second.fence).state is S.ADD_PIECE


def test_times_come_from_the_server_clock(store: SectorStore) -> None:
    sector = store.start(store.create("f01000", "cc").id, actor="t")
    before = store.now_ms()
    dispatch(store, sector)
    after = store.now_ms()
    note = events(store, sector.id, "dispatch")[-1]
    assert before <= note.at_ms <= after


@pytest.mark.parametrize("sent", [False, True], ids=["not sent", "intent recorded"])
def test_a_sector_whose_precommit_may_be_sent_is_never_reticketed(
    farm_env: Path, prefix: str, sent: bool
) -> None:
    rt = runtime(prefix)
    old = Randomness(epoch=rt.chain.head() - 3800, value="00" * 32)  # expired
    sector = place(rt.store, S.PRE_COMMITTING)
    attempt = {"uuid": "7f1c5f0e-intent"} if sent else {}
    rt.store.move(
        sector.id,
        S.PRE_COMMITTING,
        actor="t",
        sources=[S.PRE_COMMITTING],
        expected_version=sector.version,
        updates={
            "ticket": old,
            "deadlines": {"ticket_expiry": old.epoch + 3780},
            "deadline_epoch": old.epoch + 3780,
            "outputs": {"PreCommitting": attempt},
        },
    )
    report = Supervisor(rt, "sup").tick()
    assert report.reticketed == ([] if sent else [sector.id])
    assert rt.store.get(sector.id).state is (S.PRE_COMMITTING if sent else S.PRE_COMMIT_1)
