"""A pool of many sectors: compacted histories of final sectors, bulk listings."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from sealpool.cli import cli
from sealpool.metrics import phase_runs
from sealpool.store import (
    WORK_PHASES,
    HistoryPolicy,
    Randomness,
    Sector,
    SectorState,
    SectorStore,
)

S = SectorState


def walk(store: SectorStore, until: SectorState = S.PROVING, worker: str = "host-a:1-1") -> Sector:
    """A new sector driven through claimed phases (one retried) up to ``until``."""
    sector = store.start(store.create("f01000", "cc").id, actor="test")
    for phase in WORK_PHASES[: WORK_PHASES.index(until) if until in WORK_PHASES else None]:
        if phase is S.PRE_COMMIT_2:
            lease = store.claim(sector.id, phase, worker)
            assert lease is not None
            store.fail(lease, "GPU busy", retry=True)
        lease = store.claim(sector.id, phase, worker)
        assert lease is not None
        sector = store.complete(lease, detail=f"{phase.value} done")
    return sector


def store_with(store: SectorStore, mode: str, keep_days: float = 7.0) -> SectorStore:
    return SectorStore(
        store.client,
        prefix=store.prefix,
        history=HistoryPolicy(mode, keep_days),  # type: ignore[arg-type]
    )


def test_nothing_is_compacted_before_the_sector_is_final(store: SectorStore) -> None:
    sector = walk(store, until=S.FINALIZE)
    history = store.history(sector.id)
    assert store.client.exists(store.keys.history(sector.id))
    assert not store.client.exists(store.keys.history_archive)
    assert [h.event for h in history].count("claim") == len(WORK_PHASES) - 1 + 1  # one retry
    assert any(h.event == "retry" and h.detail == "GPU busy" for h in history)


def test_an_archived_history_is_the_full_history(store: SectorStore) -> None:
    sector = walk(store, until=S.FINALIZE)
    before = store.history(sector.id)
    lease = store.claim(sector.id, S.FINALIZE, "host-b:2-2")
    assert lease is not None
    assert store.complete(lease, detail="sealed").state is S.PROVING
    assert not store.client.exists(store.keys.history(sector.id))
    assert store.client.xlen(store.keys.history_archive) == 1
    after = store.history(sector.id)
    assert after[: len(before)] == before
    assert [(h.event, h.to_state, h.detail) for h in after[len(before) :]] == [
        ("claim", "Finalize", f"token {lease.token}"),
        ("complete", "Proving", "sealed"),
    ]


@pytest.mark.parametrize("mode", ["drop", "archive-expired"])
def test_a_summary_keeps_what_ratio_and_show_need(store: SectorStore, mode: str) -> None:
    compacting = store_with(store, "drop") if mode == "drop" else store
    sector = walk(compacting, until=S.FINALIZE)
    before = [r for r in phase_runs(sector.id, store.history(sector.id)) if r.outcome == "complete"]
    lease = compacting.claim(sector.id, S.FINALIZE, "host-b:2-2")
    assert lease is not None
    assert compacting.complete(lease).state is S.PROVING
    if mode == "archive-expired":
        store.client.xtrim(store.keys.history_archive, minid=store.now_ms() + 1)
    assert not store.client.exists(store.keys.history(sector.id))
    summary = compacting.history(sector.id)
    runs = phase_runs(sector.id, summary)
    assert [(r.phase, r.worker, r.started_ms, r.ended_ms) for r in runs[:-1]] == [
        (r.phase, r.worker, r.started_ms, r.ended_ms) for r in before
    ]
    assert (runs[-1].phase, runs[-1].host, runs[-1].outcome) == ("Finalize", "host-b", "complete")
    assert summary[-1].to_state == "Proving"
    assert set(compacting.get(sector.id).runs) == {p.value for p in WORK_PHASES}


def test_the_archive_forgets_after_its_days(store: SectorStore) -> None:
    brief = store_with(store, "archive", keep_days=0)
    first = walk(brief)
    store.client.xtrim(store.keys.history_archive, minid=store.now_ms() + 1)
    second = walk(brief)  # its XADD trims entries older than now
    assert store.client.xlen(store.keys.history_archive) == 1
    assert brief.history(first.id)[0].detail.startswith("(history compacted")
    assert brief.history(second.id)[0].event == "create"


def listed(store: SectorStore, *args: Any, **options: Any) -> list[dict[str, Any]]:
    """The records of a listing, parsed."""
    return [json.loads(raw) for chunk in store.listing(*args, **options) for raw in chunk]


def test_every_change_keeps_the_listed_json_equal_to_the_record(store: SectorStore) -> None:
    def same(sector_id: str) -> None:
        assert listed(store, store.get(sector_id).state) == [
            s.model_dump(mode="json") for s in store.list(store.get(sector_id).state)
        ]

    sector = store.create("f01000", "cc")
    same(sector.id)
    sector = store.start(sector.id, actor="test", host="host/a")
    same(sector.id)
    ready = store.client.get(store.keys.listing(sector.id))  # a live sector's JSON is kept
    assert ready is not None and '"host":"host/a"' in ready  # '/' as Python writes it
    assert store.message_sent(sector, "sent")
    same(sector.id)
    assert store.message_held(sector.id, store.get(sector.id).msg_id or "", "host/a|ap")
    same(sector.id)
    assert store.reissue(sector.id, store.get(sector.id).msg_id or "", 5.0, "lost")
    same(sector.id)
    assert store.prioritize(sector.id, 1, "test", "urgent")
    same(sector.id)
    lease = store.claim(sector.id, S.ADD_PIECE, "host/a:1-1")
    assert lease is not None
    same(sector.id)
    store.renew(lease, updates={"temp_path": "/t/a b", "last_error": r'q" \ / ü'})
    same(sector.id)
    store.fail(lease, "disk", retry=True)
    same(sector.id)
    lease = store.claim(sector.id, S.ADD_PIECE, "host/a:1-1", lease_s=0.05)
    assert lease is not None
    taken = store.take_over(store.get(sector.id), S.ADD_PIECE, actor="sup", detail="lost")
    deadline = time.monotonic() + 30  # the lease runs out on the server's clock
    while taken is None and time.monotonic() < deadline:
        taken = store.take_over(store.get(sector.id), S.ADD_PIECE, actor="sup", detail="lost")
    assert taken is not None
    same(sector.id)
    lease = store.claim(sector.id, S.ADD_PIECE, "host/a:1-1")
    assert lease is not None
    store.complete(lease, updates={"outputs": {"AddPiece": {"cid": "baga/1"}}})
    same(sector.id)
    store.move(sector.id, S.FAILED, actor="test", detail="bad")
    assert not store.client.exists(store.keys.listing(sector.id))  # terminal: hash only
    same(sector.id)
    store.move(sector.id, S.PRE_COMMIT_1, actor="test")
    same(sector.id)


def test_bulk_records_equal_the_validated_records(store: SectorStore) -> None:
    sectors = [walk(store, until=S.PRE_COMMIT_2) for _ in range(3)] + [walk(store)]
    store.move(
        sectors[0].id,
        S.FAILED,
        actor="test",
        detail="bad",
        updates={
            "last_error": 'quote " and \\ and ünïcode',
            "ticket": Randomness(epoch=7, value="ab" * 32),
            "deadlines": {"precommit": 1234},
            "outputs": {"PreCommit1": {"bytes": 12}},
        },
    )
    store.create_many("f01000", "deal", 2)
    for state in (*SectorState, None):
        for kind in ("cc", "deal", None):
            validated = [s.model_dump(mode="json") for s in store.list(state, kind)]
            assert listed(store, state, kind, chunk=2) == validated, (state, kind)
    assert [r["id"] for r in listed(store, limit=3)] == [s.id for s in store.list(limit=3)]
    mine = store.create_many("f02000", "cc", 2)
    assert [r["id"] for r in listed(store, S.PENDING, miner="f02000")] == [s.id for s in mine]


@pytest.mark.usefixtures("cli_env")
def test_streamed_json_listing_equals_the_validated_listing(store: SectorStore) -> None:
    for _ in range(3):
        walk(store, until=S.PRE_COMMIT_1)
    store.create_many("f01000", "cc", 2500)  # more than one chunk
    for args in (["--state", "Pending"], ["--state", "PreCommit1"], []):
        result = CliRunner().invoke(cli, ["sectors", "list", "--limit", "0", "--json", *args])
        assert result.exit_code == 0, result.output
        listed = json.loads(result.output)
        state = SectorState(args[1]) if args else None
        expected = [s.model_dump(mode="json") for s in store.list(state)]
        queued = {s["id"] for s in expected if s["status"] == "queued"}
        assert [{k: v for k, v in r.items() if k != "stuck"} for r in listed] == expected
        assert {r["id"] for r in listed if "stuck" in r} == queued  # no live worker runs


def test_a_bulk_read_stopped_midway_leaves_the_client_usable(store: SectorStore) -> None:
    store.create_many("f01000", "cc", 30)
    chunks = store.listing(S.PENDING, chunk=10)
    assert len(next(chunks)) == 10
    chunks.close()
    assert len(store.list(S.PENDING)) == 30
