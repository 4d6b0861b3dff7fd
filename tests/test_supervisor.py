"""The supervisor: keep-full with deals first, deadlines, take-overs, leadership, ratio."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from sealpool.deals import DealBook, sector_per_deal
from sealpool.runtime import runtime
from sealpool.store import PhaseStatus, Randomness, SectorState
from sealpool.store.keys import PoolKeys
from sealpool.supervisor import Supervisor
from sealpool.supervisor.leader import LeaderLease
from sealpool.supervisor.ratio import PhaseTime, suggest
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool, server_ms

from farm_helpers import events, register_slots
from helpers import wait_until

S = SectorState
ENTRIES = {"start", "take-over", "restart", "reticket", "resume"}  # events that dispatch


@pytest.fixture
def supervised(farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALPOOL_CREATE_INTERVAL_S", "0")
    monkeypatch.setenv("SEALPOOL_LOOKAHEAD", "2")
    return farm_env


def test_ratio_matches_the_hand_computed_answer() -> None:
    seconds = {
        "AddPiece": 300,
        "PreCommit1": 10800,
        "PreCommit2": 900,
        "PreCommitting": 60,
        "Commit1": 30,
        "Commit2": 1200,
        "Committing": 60,
        "Finalize": 300,
    }
    times = {p: PhaseTime(p, s, s * 1.2, 10, "history") for p, s in seconds.items()}
    # 12 PC1 slots start 12 / 10800 s = one sector per 900 s.
    plan = suggest(times, 12)
    slots = {row.phase: row.suggested_slots for row in plan.phases}
    assert slots == {
        "AddPiece": 1,
        "PreCommit1": 12,
        "PreCommit2": 1,
        "PreCommitting": 1,
        "Commit1": 1,
        "Commit2": 2,
        "Committing": 1,
        "Finalize": 1,
    }
    assert plan.sectors_per_day == pytest.approx(96.0)  # 86400 / 900
    # With only one C2 slot, C2 (1 per 1200 s) is the bottleneck: 72 a day, PC1 idles 25 %.
    have = suggest(times, 12, {**slots, "Commit2": 1})
    assert have.bottleneck == "Commit2" and have.sectors_per_day == pytest.approx(72.0)
    idle = {row.phase: row.idle_share for row in have.phases}
    assert idle["PreCommit1"] == pytest.approx(0.25) and idle["Commit2"] == pytest.approx(0)


def test_keep_full_starts_deals_first_then_cc(
    supervised: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_CC_FILL", "true")
    rt = runtime(prefix)
    slots = register_slots(rt.store.client, prefix, "hostA", "PreCommit1", 3)
    try:
        pending_cc = rt.store.create("f01000", "cc")
        book = DealBook(rt.store.client, prefix)
        for deal_id in (11, 12, 13, 14, 15):
            book.add(deal_id, 8 << 30)  # four 8 GiB pieces fill a 32 GiB sector
        monkeypatch.setenv("SEALPOOL_SECTOR_SIZE", "32GiB")
        runtime.cache_clear()
        rt = runtime(prefix)
        boss = Supervisor(rt, "sup")
        report = boss.tick()
        started = rt.store.get_many(report.started)
        assert [(s.kind, s.deal_ids) for s in started] == [
            ("deal", [11, 12, 13, 14]),
            ("deal", [15]),
            ("cc", []),
            ("cc", []),
            ("cc", []),
        ]
        assert started[2].id == pending_cc.id  # the operator's CC sector before new ones
        assert len(started) == 3 + 2 and book.waiting() == []  # 3 free slots + look-ahead 2
        again = boss.tick()
        assert again.started == []  # full: 3 free PC1 slots + look-ahead 2 already queued
    finally:
        slots.unregister()


def test_an_arriving_deal_starts_at_once_though_cc_sectors_fill_the_look_ahead(
    supervised: Path,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    registered: Callable[..., SlotPool],
) -> None:
    monkeypatch.setenv("SEALPOOL_CC_FILL", "true")
    rt = runtime(prefix)
    registered("hostA", [SlotPlan("PreCommit1", i, None, None, {}) for i in range(2)], 2.0)
    boss = Supervisor(rt, "sup")
    assert len(boss.tick().started) == 2 + 2  # 2 free slots + look-ahead 2, all CC
    assert boss.tick().started == []
    book = DealBook(rt.store.client, prefix)
    for deal_id in range(1, 7):
        book.add(deal_id, 2048)  # one deal fills a 2 KiB sector
    started = rt.store.get_many(boss.tick().started)
    # deal sectors count only the deal sectors in front of them: 2 + 2 start, no CC
    assert [s.deal_ids for s in started] == [[1], [2], [3], [4]]
    assert boss.tick().started == [] and len(book.waiting()) == 2


def test_idle_pc1_slots_of_a_host_no_sector_can_be_bound_to_start_nothing(
    supervised: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_CC_FILL", "true")
    rt = runtime(prefix)
    client = rt.store.client
    pools = [
        register_slots(client, prefix, "hostA", "AddPiece", 1),
        register_slots(client, prefix, "hostA", "PreCommit1", 2),
        register_slots(client, prefix, "hostB", "PreCommit1", 2),  # no AddPiece: unbindable
    ]
    try:
        boss = Supervisor(rt, "sup")
        started = rt.store.get_many(boss.tick().started)
        assert [s.host for s in started] == ["hostA"] * (2 + 2)  # hostA's 2 idle + look-ahead
        assert boss.tick().started == []  # hostB's idle slots ask for nothing more
    finally:
        for slots in pools:
            slots.unregister()


def test_four_supervisors_never_duplicate(
    supervised: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_CC_FILL", "true")
    rt = runtime(prefix)
    slots = register_slots(rt.store.client, prefix, "hostA", "PreCommit1", 20)
    try:
        rt.store.create_many("f01000", "cc", 5)
        sector_per_deal(rt.store, "f01000", [1, 2, 3], 1 << 30)
        book = DealBook(rt.store.client, prefix)
        for deal_id in range(100, 106):
            book.add(deal_id, 1024)  # two to a 2 KiB sector
        for sector in rt.store.create_many("f01000", "cc", 4):  # their workers died
            rt.store.move(sector.id, S.ADD_PIECE, actor="t")
            rt.store.move(sector.id, S.PRE_COMMIT_1, actor="t")
            rt.store.claim(sector.id, S.PRE_COMMIT_1, "dead", lease_s=0.05, host="hostA")
        wait_until(lambda: len(rt.store.expired_leases()) == 4, what="the dead leases expired")
        supervisors = [Supervisor(runtime(prefix), f"sup-{i}") for i in range(4)]

        def run(boss: Supervisor, leaderless: bool) -> None:
            for _ in range(200 if not leaderless else 25):
                boss.act() if leaderless else boss.tick()

        for leaderless in (False, True):  # with leadership, then all four acting at once
            threads = [threading.Thread(target=run, args=(b, leaderless)) for b in supervisors]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        slots.unregister()
    sectors = rt.store.list()
    deals = Counter(d for s in sectors for d in s.deal_ids)
    assert all(deals[d] == 1 for d in [1, 2, 3, *range(100, 106)]), deals  # one sector each
    for sector in sectors:
        history = rt.store.history(sector.id)
        events_seen = [h.event for h in history]
        assert events_seen.count("create") == 1
        assert events_seen.count("start") <= 1, (sector.id, events_seen)
        entries = sum(1 for h in history if h.event in ENTRIES)
        messages = {h.detail.split()[0] for h in history if h.event == "dispatch"}
        assert len(messages) == entries, (sector.id, events_seen)  # one message per entry
    started = [s for s in sectors if s.state is not S.PENDING]
    counts = rt.store.counts()
    waiting = sum(counts[S.ADD_PIECE].values()) + sum(counts[S.PRE_COMMIT_1].values())
    assert waiting == len(started) == 20 + 2  # 20 free PC1 slots + look-ahead, not more
    assert rt.store.counters()["took_over"] == 4


def test_leadership_fails_over_within_one_lease(
    supervised: Path, prefix: str, client: redis.Redis
) -> None:
    lease_ms = 2000  # long enough that a loaded machine can't lapse it between two calls
    first = LeaderLease(client, prefix, "a", lease_s=lease_ms / 1000)
    second = LeaderLease(client, prefix, "b", lease_s=lease_ms / 1000)
    assert first.hold() and not second.hold()
    assert first.hold() and first.leader() == "a"  # renewing keeps it
    renewed_ms = server_ms(client)  # "a" dies here: it stops renewing
    assert 0 < client.pttl(PoolKeys(prefix).leader) <= lease_ms
    passed = lambda: server_ms(client) >= renewed_ms + lease_ms  # noqa: E731
    wait_until(passed, what="one lease passed on the server's clock")
    assert second.hold()  # the first try once one lease has passed takes it
    assert second.token > first.token and second.leader() == "b"
    assert not first.hold()  # the old leader learns it lost the lead
    second.resign()
    assert first.hold()


def test_expired_ticket_is_reticketed_or_aborted(
    supervised: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime(prefix)
    head = rt.chain.head()
    # PC2 + precommit need (900 + 60) s = 32 epochs; this ticket has 20 left.
    old = Randomness(epoch=head - rt.settings.max_ticket_age + 20, value="00" * 32)
    risky = Randomness(epoch=head - rt.settings.max_ticket_age + 150, value="11" * 32)
    doomed, at_risk, fine = (rt.store.create("f01000", "cc") for _ in range(3))
    for sector, ticket in ((doomed, old), (at_risk, risky), (fine, None)):
        rt.store.move(sector.id, S.ADD_PIECE, actor="t")
        rt.store.move(sector.id, S.PRE_COMMIT_1, actor="t")
        expiry = (ticket or Randomness(epoch=head, value="")).epoch + rt.settings.max_ticket_age
        rt.store.move(
            sector.id,
            S.PRE_COMMIT_2,
            actor="t",
            updates={
                "ticket": ticket,
                "deadlines": {"ticket_expiry": expiry},
                "deadline_epoch": expiry,
            },
        )
    boss = Supervisor(rt, "sup")
    report = boss.tick()
    assert report.reticketed == [doomed.id] and report.prioritized == [at_risk.id]
    redone = rt.store.get(doomed.id)
    assert (redone.state, redone.status, redone.ticket) == (
        S.PRE_COMMIT_1,
        PhaseStatus.QUEUED,
        None,
    )
    assert rt.store.get(at_risk.id).priority == 0
    assert f"queue={prefix}.pc2 priority=0" in events(rt.store, at_risk.id, "dispatch")[-1].detail
    assert rt.store.get(fine.id).priority == 5
    assert boss.tick().reticketed == []  # done once
    boss.lease.resign()
    assert rt.store.counters()["reticketed"] == 1
    monkeypatch.setenv("SEALPOOL_EXPIRED_TICKET", "abort")
    runtime.cache_clear()
    rt = runtime(prefix)
    other = rt.store.create("f01000", "cc")
    rt.store.move(other.id, S.ADD_PIECE, actor="t")
    rt.store.move(
        other.id,
        S.PRE_COMMIT_1,
        actor="t",
        updates={
            "ticket": old,
            "deadlines": {"ticket_expiry": old.epoch + 3780},
            "deadline_epoch": old.epoch + 3780,
        },
    )
    assert Supervisor(rt, "sup").tick().aborted == [other.id]
    assert rt.store.get(other.id).state is S.ABORTED
    assert rt.store.counters()["aborted_ticket_expired"] == 1


def test_expired_lease_on_a_live_host_is_requeued_there(supervised: Path, prefix: str) -> None:
    rt = runtime(prefix)
    slots = register_slots(rt.store.client, prefix, "hostA", "PreCommit2", 1)
    try:
        sector = rt.store.create("f01000", "cc")
        for state in (S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2):
            rt.store.move(sector.id, state, actor="t")
        assert rt.store.claim(sector.id, S.PRE_COMMIT_2, "hung", lease_s=0.05, host="hostA")
        wait_until(lambda: rt.store.expired_leases() == [sector.id], what="the lease expired")
        report = Supervisor(rt, "sup").tick()
    finally:
        slots.unregister()
    assert report.took_over == [sector.id]
    again = rt.store.get(sector.id)
    assert (again.state, again.status, again.host) == (S.PRE_COMMIT_2, PhaseStatus.QUEUED, "hostA")
    assert f"queue={prefix}.pc2@hostA " in events(rt.store, sector.id, "dispatch")[-1].detail
