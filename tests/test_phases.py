"""Sealing phases on real Celery workers (threads) against a real Redis broker and store."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from sealpool.deals import sector_per_deal
from sealpool.proving_layout import cache_names, sector_files
from sealpool.runtime import runtime
from sealpool.sealing_tasks import dispatch, start
from sealpool.store import PhaseStatus, Randomness, SectorState

from farm_helpers import events, wait_for, worker
from helpers import place

S = SectorState
PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]


def test_sectors_seal_to_proving(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sectors = sector_per_deal(store, "f01000", [5, 6], 1024) + store.create_many("f01000", "cc", 2)
    with worker(prefix):
        for sector in sectors:
            start(store, sector.id, actor="test")
        done = wait_for(store, [s.id for s in sectors])
    for sector in done:
        assert sector.state is S.PROVING, sector.last_error
        assert sector.host == "hostA" and sector.ticket and sector.seed
        assert sector.seed.epoch == sector.outputs["PreCommitting"]["seed_epoch"]
        assert sector.seed.epoch - sector.outputs["PreCommitting"]["epoch"] == 150
        assert not Path(sector.temp_path).exists()  # scratch freed by Finalize
        files = sector_files(farm_env / "hostA" / "sealed", sector.miner, sector.number)
        assert sector.sealed_path == str(files.sealed)
        assert files.sealed.stat().st_size > 0 and (files.cache / "p_aux").exists()
        digest = hashlib.sha256(files.sealed.read_bytes()).hexdigest()
        assert sector.outputs["Finalize"]["sealed_sha256"] == digest  # verified there
        queues = [h.detail.split()[1] for h in events(store, sector.id, "dispatch")]
        assert list(dict.fromkeys(queues)) == [f"queue={prefix}.{q}" for q in (
            "ap", "pc1@hostA", "pc2@hostA", "precommit", "waitseed", "c1@hostA", "c2",
            "provecommit", "finalize@hostA")]  # fmt: skip
        assert len(queues) - len(set(queues)) <= 2  # WaitSeed looks again without a slot
        assert [h.from_state for h in events(store, sector.id, "claim")] == [
            p.value
            for p in (
                S.ADD_PIECE,
                S.PRE_COMMIT_1,
                S.PRE_COMMIT_2,
                S.PRE_COMMITTING,
                S.WAIT_SEED,
                S.COMMIT_1,
                S.COMMIT_2,
                S.COMMITTING,
                S.FINALIZE,
            )
        ]
        assert sum(o.get("cross_host_bytes", 0) for o in sector.outputs.values()) == 0
    assert set(runtime(prefix).chain.proven()) == {s.number for s in sectors}


def test_dispatch_history_records_queue_priority_and_host(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    deal, cc = store.create("f01000", "deal"), store.create("f01000", "cc")
    with worker(prefix):
        for sector in (deal, cc):
            start(store, sector.id, actor="test")
        wait_for(store, [deal.id, cc.id])
    first = [h.detail.split(" by ")[0] for h in events(store, deal.id, "dispatch")][:2]
    assert first == [
        f"{deal.id}/1 queue={prefix}.ap priority=4",
        f"{deal.id}/2 queue={prefix}.pc1@hostA priority=3",
    ]
    assert events(store, cc.id, "dispatch")[0].detail.startswith(
        f"{cc.id}/1 queue={prefix}.ap priority=9"
    )


def test_same_message_delivered_twice_runs_the_backend_once(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = farm_env / "runs.log"
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", str(PROCESSOR).replace("'", '"'))
    monkeypatch.setenv("SEALPOOL_EXAMPLE_LOG", str(log))
    monkeypatch.setenv("SEALPOOL_PROCESSOR_ENV", '["SEALPOOL_EXAMPLE_LOG"]')
    store = runtime(prefix).store
    sector = store.move(store.create("f01000", "cc").id, S.ADD_PIECE, actor="test")
    for _ in range(3):
        dispatch(store, sector, actor="test")  # the same AddPiece message, three times
    with worker(prefix, concurrency=3):
        done = wait_for(store, [sector.id])[0]
    assert done.state is S.PROVING, done.last_error
    runs = log.read_text().splitlines()
    assert runs.count(f"{sector.id} AddPiece") == 1
    assert len(runs) == len(set(runs)) == 6  # AP, PC1, PC2, C1, C2, Finalize: once each
    assert all(count == 1 for count in done.attempts.values())


def test_deal_sector_added_while_cc_queued_starts_first(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    cc = store.create_many("f01000", "cc", 4)
    for sector in cc:
        start(store, sector.id, actor="test")
    (deal,) = sector_per_deal(store, "f01000", [9], 1024)
    start(store, deal.id, actor="test")
    with worker(prefix, phases=[S.ADD_PIECE], concurrency=1):
        wait_for(store, [s.id for s in [*cc, deal]], done=[S.PRE_COMMIT_1])
    claimed_at = {s.id: events(store, s.id, "claim")[0].at_ms for s in [*cc, deal]}
    assert min(claimed_at, key=claimed_at.get) == deal.id
    assert [s.id for s in sorted(cc, key=lambda s: claimed_at[s.id])] == [s.id for s in cc]


def test_external_backend_with_the_example_processor(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", str(PROCESSOR).replace("'", '"'))
    store = runtime(prefix).store
    (sector,) = sector_per_deal(store, "f01000", [3], 1024)
    with worker(prefix):
        start(store, sector.id, actor="test")
        done = wait_for(store, [sector.id])[0]
    assert done.state is S.PROVING, done.last_error
    assert {o["processor"] for p, o in done.outputs.items() if "processor" in o} == {"example"}
    assert done.outputs["Finalize"]["stored"] == done.sealed_path
    assert Path(done.sealed_path).is_file() and not Path(done.temp_path).exists()


# The example processor, but its Finalize reports a sealed file checksum that is not the file's.
LIAR = f"""
import json, subprocess, sys
request = sys.stdin.read()
done = subprocess.run({PROCESSOR!r}, input=request, capture_output=True, text=True, check=True)
outputs = json.loads(done.stdout)
if "sealed_sha256" in outputs:
    outputs["sealed_sha256"] = "0" * 64
print(json.dumps(outputs))
"""


def test_finalize_that_lies_about_the_sealed_checksum_never_reaches_proving(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", json.dumps([sys.executable, "-c", LIAR]))
    monkeypatch.setenv("SEALPOOL_MAX_ATTEMPTS", "2")
    store = runtime(prefix).store
    (sector,) = store.create_many("f01000", "cc", 1)
    with worker(prefix):
        start(store, sector.id, actor="test")
        done = wait_for(store, [sector.id])[0]
    assert done.state is S.FAILED and done.failed_phase == "Finalize", done.last_error
    sealed = f"{farm_env}/hostA/sealed/sealed/s-t01000-{sector.number}"
    assert f"Finalize of {sector.id}: {sealed} has sha256 " in done.last_error
    assert f"not the {'0' * 64} the processor reported (after 2 attempts)" in done.last_error
    assert (Path(done.temp_path) / "sealed").exists()  # scratch kept: nothing verified


def test_finalize_refuses_a_sealed_path_on_the_scratch(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_SEALED_DIRS", json.dumps([f"{farm_env}/hostA/temp"]))
    store = runtime(prefix).store
    (sector,) = store.create_many("f01000", "cc", 1)
    with worker(prefix):
        start(store, sector.id, actor="test")
        done = wait_for(store, [sector.id])[0]
    assert done.state is S.FAILED and done.failed_phase == "Finalize", done.last_error
    scratch = (farm_env / "hostA" / "temp" / sector.id).resolve()
    assert done.last_error == (
        f"Finalize of {sector.id}: sealed path {scratch.parent} overlaps the scratch {scratch}: "
        "temp and sealed directories must be apart"
    )
    assert (scratch / "sealed").exists()  # nothing moved onto itself, nothing removed


def test_failing_processor_retries_with_backoff_then_fails(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", str(PROCESSOR).replace("'", '"'))
    monkeypatch.setenv("SEALPOOL_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("SEALPOOL_PROCESSOR_ENV", '["SEALPOOL_EXAMPLE_FAIL"]')
    store = runtime(prefix).store
    bad, good = store.create_many("f01000", "cc", 2)
    monkeypatch.setenv("SEALPOOL_EXAMPLE_FAIL", f"{bad.id}:PreCommit2")  # read by the processor
    with worker(prefix):
        for sector in (bad, good):
            start(store, sector.id, actor="test")
        failed, sealed = wait_for(store, [bad.id, good.id])
    assert sealed.state is S.PROVING, sealed.last_error
    assert failed.state is S.FAILED
    assert "processor exited 3" in failed.last_error
    assert "simulated failure of PreCommit2" in failed.last_error
    assert "after 3 attempts" in failed.last_error
    assert failed.attempts["PreCommit2"] == 3
    assert [h.event for h in store.history(bad.id) if h.from_state == "PreCommit2"].count(
        "retry"
    ) == 2
    delays = [
        float(h.detail.split(" in ")[1].rstrip("s"))
        for h in events(store, bad.id, "dispatch")
        if " in " in h.detail
    ]
    assert delays == [0.1, 0.2]  # 200 farm s, then 400, at time scale 2000


@pytest.mark.parametrize("policy", ["abort", "reticket"])
def test_ticket_too_old_never_starts_pc1(
    farm_env: Path, prefix: str, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_EXPIRED_TICKET", policy)
    rt = runtime(prefix)
    old = Randomness(epoch=rt.chain.head() - 3700, value="00" * 32)
    sector = rt.store.create("f01000", "cc")
    sector = rt.store.move(sector.id, S.ADD_PIECE, actor="test", updates={"ticket": old})
    with worker(prefix):
        dispatch(rt.store, sector, actor="test")
        done = wait_for(rt.store, [sector.id])[0]
    pc1_runs = [
        h.event
        for h in rt.store.history(sector.id)
        if h.from_state == "PreCommit1" and h.event != "dispatch"
    ]
    if policy == "abort":
        assert done.state is S.FAILED
        assert "PC1 not started" in done.last_error and f"epoch {old.epoch}" in done.last_error
        assert pc1_runs == ["claim", "fail"]
        assert not (Path(done.temp_path) / "cache").exists()  # no layer was written
    else:
        assert done.state is S.PROVING, done.last_error
        assert done.ticket.epoch > old.epoch + 3000
        assert pc1_runs == ["claim", "complete"]


def test_claim_refused_on_another_host(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sector = store.move(store.create("f01000", "cc").id, S.ADD_PIECE, actor="test")
    assert store.claim(sector.id, S.ADD_PIECE, "w-b", host="hostB") is not None
    assert store.get(sector.id).host == "hostB"
    running = store.get(sector.id)
    store.move(sector.id, S.ADD_PIECE, actor="t", expected_version=running.version)  # restart
    assert store.claim(sector.id, S.ADD_PIECE, "w-a", host="hostA") is None
    assert store.get(sector.id).status is PhaseStatus.QUEUED
    assert store.claim(sector.id, S.ADD_PIECE, "w-b2", host="hostB") is not None


def test_finalize_retried_after_its_scratch_was_removed_completes(
    farm_env: Path, prefix: str
) -> None:
    """An attempt copied and checked the sealed files, recorded them, removed the scratch
    and died before completing: the next attempt checks the copy and completes."""
    store = runtime(prefix).store
    sector = place(store, S.FINALIZE)
    files = sector_files(farm_env / "hostA" / "sealed", sector.miner, sector.number)
    files.cache.mkdir(parents=True)
    files.sealed.parent.mkdir()
    files.sealed.write_bytes(b"s" * 4096)
    for name in cache_names(2048):
        (files.cache / name).write_bytes(b"p" * 64)
    copied = {
        "sealed_path": str(files.sealed), "sealed_bytes": 4096,
        "cache_files": dict.fromkeys(cache_names(2048), 64),
        "sealed_sha256": hashlib.sha256(b"s" * 4096).hexdigest(),
    }  # fmt: skip
    gone = farm_env / "hostA" / "temp" / sector.id  # removed by the attempt that died
    store.move(
        sector.id,
        S.FINALIZE,
        actor="t",
        sources=[S.FINALIZE],
        expected_version=sector.version,
        updates={"host": "hostA", "temp_path": str(gone), "outputs": {"Finalize": copied}},
    )
    with worker(prefix, phases=[S.FINALIZE]):
        dispatch(store, store.get(sector.id))
        done = wait_for(store, [sector.id])[0]
    assert done.state is S.PROVING, done.last_error
    assert done.sealed_path == str(files.sealed)
