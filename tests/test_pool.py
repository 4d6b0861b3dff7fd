"""Creating, listing, counting sectors and their history."""

from __future__ import annotations

import threading

import pytest

from sealpool.errors import InvalidSectorId, SectorNotFound
from sealpool.store import PIPELINE, SectorState, SectorStore, parse_sector_id

from helpers import place

S = SectorState


@pytest.mark.parametrize("good", ["f01000-42", "t01234-0", "f0999-123456"])
def test_valid_sector_ids(good: str) -> None:
    miner, number = parse_sector_id(good)
    assert f"{miner}-{number}" == good


@pytest.mark.parametrize(
    "bad", ["", "42", "f01000", "f01000-", "f01000-x", "../f01000-1", "f01000-1/../x",
            "f01000-1\n", "F01000-1", "f1000-1", "f01000--1", " f01000-1", "f01000-1.5"],
)  # fmt: skip
def test_invalid_sector_ids_are_rejected(store: SectorStore, bad: str) -> None:
    with pytest.raises(InvalidSectorId, match="expected <miner>-<number>"):
        parse_sector_id(bad)
    with pytest.raises(InvalidSectorId):
        store.get(bad)


def test_unknown_sector(store: SectorStore) -> None:
    with pytest.raises(SectorNotFound, match="f01000-999"):
        store.get("f01000-999")


def test_creation_is_idempotent_per_request_id(store: SectorStore) -> None:
    results = []

    def retry() -> None:
        results.append([s.id for s in store.create_many("f01000", "cc", 3, request_id="req-1")])

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(ids == results[0] for ids in results)
    assert len(set(results[0])) == 3
    assert store.counts()[S.PENDING] == {"deal": 0, "cc": 3}
    fresh = store.create("f01000", "cc", request_id="req-2")
    assert fresh.number > max(store.get(i).number for i in results[0])


def test_numbers_come_from_a_counter_per_miner(store: SectorStore) -> None:
    assert [s.number for s in store.create_many("f01000", "cc", 3)] == [1, 2, 3]
    assert store.create("f02000", "cc").id == "f02000-1"


def test_listing_ten_thousand_by_state_is_exact(store: SectorStore) -> None:
    created = store.create_many("f01000", "cc", 8000) + store.create_many("f01000", "deal", 2000)
    moved = {s.id for s in created[::3]}
    for sector_id in moved:
        store.move(sector_id, S.ADD_PIECE, actor="test")
    pending = store.list(S.PENDING)
    assert {s.id for s in pending} == {s.id for s in created} - moved
    assert len(pending) == 10000 - len(moved)
    assert all(s.state is S.PENDING for s in pending)
    add_piece = store.ids_in_state(S.ADD_PIECE)
    assert set(add_piece) == moved and len(add_piece) == len(moved)
    deal_in_add_piece = sum(1 for s in created[::3] if s.kind == "deal")
    assert store.counts()[S.ADD_PIECE]["deal"] == deal_in_add_piece
    assert len(store.list(S.ADD_PIECE, kind="deal")) == deal_in_add_piece
    assert len(store.list(limit=25)) == 25


def test_listing_is_most_urgent_first(store: SectorStore) -> None:
    cc = store.create("f01000", "cc")
    deal = store.create("f01000", "deal")
    urgent = store.create("f01000", "cc", priority=0)
    assert store.ids_in_state(S.PENDING) == [urgent.id, deal.id, cc.id]


def test_history_is_complete_and_ordered(store: SectorStore) -> None:
    sector = store.create("f01000", "cc", request_id="h")
    store.move(sector.id, S.ADD_PIECE, actor="supervisor")
    expected = [("create", "", "Pending"), ("move", "Pending", "AddPiece")]
    for phase in PIPELINE[1:-1]:
        lease = store.claim(sector.id, phase, f"worker-{phase}")
        assert lease is not None
        reached = store.complete(lease, detail=f"done {phase}").state
        expected += [("claim", phase.value, phase.value), ("complete", phase.value, reached.value)]
    history = store.history(sector.id)
    assert [(h.event, h.from_state, h.to_state) for h in history] == expected
    assert [h.at_ms for h in history] == sorted(h.at_ms for h in history)
    assert history[-1].actor == "worker-Finalize" and history[-1].detail == "done Finalize"
    assert store.get(sector.id).state is S.PROVING
    assert store.get(sector.id).version == len(history)


def test_deadline_index(store: SectorStore) -> None:
    soon = place(store, S.PRE_COMMIT_1)
    late = place(store, S.PRE_COMMIT_1)
    store.move(
        soon.id,
        S.PRE_COMMIT_1,
        actor="t",
        updates={"deadline_epoch": 1000, "deadlines": {"ticket": 1000}},
        expected_version=soon.version,
    )
    store.move(
        late.id,
        S.PRE_COMMIT_1,
        actor="t",
        updates={"deadline_epoch": 5000},
        expected_version=late.version,
    )
    assert store.near_deadline(2000) == [soon.id]
    assert store.get(soon.id).deadlines == {"ticket": 1000}
    store.move(soon.id, S.ABORTED, actor="t")
    assert store.near_deadline(9000) == [late.id]
