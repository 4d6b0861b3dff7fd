"""Where the supervisor starts a new sector: the host whose next PC1 slot frees soonest."""

from __future__ import annotations

from collections import Counter

from sealpool.store import SectorState, SectorStore
from sealpool.supervisor.placement import heading_to_pc1, place, shortfall
from sealpool.worker_profiles.slots import SlotReport

S = SectorState


NOW_MS = 1_000_000
PC1_MS = 10_000.0  # the configured PC1 time


def slot(
    host: str, phase: SectorState, state: str = "idle", index: int = 0, **times: int
) -> SlotReport:
    since, last = times.get("since_ms"), times.get("last_run_ms")
    return SlotReport(host, phase.value, index, state, None, since, 0.0, None, None, last)


def host_slots(host: str, pc1_states: list[str], **times: int) -> list[SlotReport]:
    pc1 = [slot(host, S.PRE_COMMIT_1, state, i, **times) for i, state in enumerate(pc1_states)]
    return [slot(host, S.ADD_PIECE), *pc1]


def place_now(slots: list[SlotReport], heading: Counter[str]) -> str | None:
    return place(slots, heading, NOW_MS, PC1_MS)


def test_idle_slots_beyond_those_heading_there_go_first_ties_to_the_most_idle() -> None:
    busy_since = {"since_ms": NOW_MS - 1_000}
    slots = host_slots("a", ["idle", "idle", "busy"], **busy_since)
    slots += host_slots("b", ["idle", "busy", "busy"], **busy_since)
    assert place_now(slots, Counter()) == "a"
    assert place_now(slots, Counter({"b": 1})) == "a"
    assert place_now(slots, Counter({"a": 2})) == "b"  # a's two idle slots have their sectors


def test_with_every_slot_busy_the_slot_expected_to_free_soonest_wins() -> None:
    # a's runs started 2 s ago and take the configured 10 s: free in 8 s; b's started 6 s
    # ago, but b's last run took 15 s: free in 9 s; c started 9 s ago: free in 1 s.
    slots = host_slots("a", ["busy"] * 2, since_ms=NOW_MS - 2_000)
    slots += host_slots("b", ["busy"] * 2, since_ms=NOW_MS - 6_000, last_run_ms=15_000)
    slots += host_slots("c", ["busy"], since_ms=NOW_MS - 9_000)
    assert place_now(slots, Counter()) == "c"
    assert place_now(slots, Counter({"c": 1})) == "a"  # c's one slot has its sector: 11 s
    assert place_now(slots, Counter({"c": 1, "a": 2})) == "b"  # a: 18 s; b: 9 s
    overrun = host_slots("late", ["busy"], since_ms=NOW_MS - 60_000)  # past its time: now
    assert place_now(slots + overrun, Counter({"c": 1})) == "late"


def test_a_deal_goes_where_its_pc1_would_end_soonest() -> None:
    fast = host_slots("fast", ["busy"], since_ms=NOW_MS - 7_000, last_run_ms=10_000)
    slow = host_slots("slow", ["idle"], last_run_ms=15_000)
    assert place_now(fast + slow, Counter()) == "slow"  # a slot free now
    # the fast host's PC1 would end in 3 + 10 s, the slow host's in 15 s
    assert place(fast + slow, Counter(), NOW_MS, PC1_MS, soonest_end=True) == "fast"


def test_hosts_that_are_lost_paused_or_without_addpiece_get_none() -> None:
    slots = host_slots("lost", ["lost"] * 4) + host_slots("paused", ["paused"] * 4)
    slots += [slot("pc1-only", S.PRE_COMMIT_1), slot("busy", S.PRE_COMMIT_1, "busy")]
    slots += [slot("busy", S.ADD_PIECE, "busy")]
    assert place_now(slots, Counter()) == "busy"
    assert place_now(slots[:-3], Counter()) is None  # the shared AddPiece queue, then


def test_a_started_sector_is_bound_to_the_host_named(store: SectorStore) -> None:
    placed, free = store.create_many("f01000", "cc", 2)
    store.start(placed.id, actor="test", host="a")
    store.start(free.id, actor="test")
    assert store.get(placed.id).host == "a" and store.get(free.id).host is None
    assert heading_to_pc1(store.get_many([placed.id, free.id])) == Counter({"a": 1, "": 1})


def test_the_shortfall_counts_idle_slots_per_host_then_the_look_ahead() -> None:
    idle = Counter({"a": 2, "b": 1})
    assert shortfall(idle, Counter(), 2) == 3 + 2
    assert shortfall(idle, Counter({"a": 2, "b": 1}), 2) == 2  # every idle slot covered
    # three heading to a beyond its two idle slots: b's idle slot still needs one
    assert shortfall(idle, Counter({"a": 5}), 2) == 1
    assert shortfall(idle, Counter({"a": 3}), 2) == 1 + 1
    # a sector bound to no host covers any host's idle slot, then counts as look-ahead
    assert shortfall(idle, Counter({"a": 2, "": 2}), 2) == 0 + 1
    assert shortfall(Counter(), Counter({"": 1, "a": 1}), 2) == 0
