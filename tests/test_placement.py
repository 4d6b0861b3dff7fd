"""Where the supervisor starts a new sector: the host whose PC1 slots need it most."""

from __future__ import annotations

from collections import Counter

from sealpool.store import SectorState, SectorStore
from sealpool.supervisor.placement import heading_to_pc1, place
from sealpool.worker_profiles.slots import SlotReport

S = SectorState


def slot(host: str, phase: SectorState, state: str = "idle", index: int = 0) -> SlotReport:
    return SlotReport(host, phase.value, index, state, None, None, 0.0, None, None)


def host_slots(host: str, pc1_states: list[str]) -> list[SlotReport]:
    pc1 = [slot(host, S.PRE_COMMIT_1, state, i) for i, state in enumerate(pc1_states)]
    return [slot(host, S.ADD_PIECE), *pc1]


def test_the_host_with_the_most_idle_pc1_slots_beyond_those_heading_there_gets_it() -> None:
    slots = host_slots("a", ["idle", "idle", "busy"]) + host_slots("b", ["idle", "busy", "busy"])
    assert place(slots, Counter()) == "a"
    assert place(slots, Counter({"a": 2})) == "b"  # a's two idle slots have their sectors
    assert place(slots, Counter({"a": 2, "b": 1})) == "a"  # both full: ties go to more idle


def test_hosts_that_are_lost_paused_or_without_addpiece_get_none() -> None:
    slots = host_slots("lost", ["lost"] * 4) + host_slots("paused", ["paused"] * 4)
    slots += [slot("pc1-only", S.PRE_COMMIT_1), slot("busy", S.PRE_COMMIT_1, "busy")]
    slots += [slot("busy", S.ADD_PIECE, "busy")]
    assert place(slots, Counter()) == "busy"
    assert place(slots[:-3], Counter()) is None  # the shared AddPiece queue, then


def test_a_started_sector_is_bound_to_the_host_named(store: SectorStore) -> None:
    placed, free = store.create_many("f01000", "cc", 2)
    store.start(placed.id, actor="test", host="a")
    store.start(free.id, actor="test")
    assert store.get(placed.id).host == "a" and store.get(free.id).host is None
    assert heading_to_pc1(store.get_many([placed.id, free.id])) == Counter({"a": 1})
