"""Several miners on one pool: shares, priorities, caps, sector numbers, one host shared."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from itertools import pairwise
from pathlib import Path

import pytest
import redis
from chain_helpers import landed, precommit_of
from click.testing import CliRunner

from sealpool.chain import SimChain
from sealpool.chain.bitfield import highest_in, runs_of
from sealpool.chain.messages import PRE_COMMIT_SECTOR_BATCH2, encode_precommits
from sealpool.chain.sim import DEPOSIT
from sealpool.cli import cli
from sealpool.errors import NumbersExhausted
from sealpool.farm import LocalFarm
from sealpool.metrics import phase_runs
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import Sector, SectorState
from sealpool.supervisor import Supervisor
from sealpool.worker_profiles.slots import SlotPool

from farm_helpers import FARM_SLOTS, most_at_once, register_slots, wait_for

S = SectorState


@pytest.fixture
def pc1_slots(supervised: Path, prefix: str) -> SlotPool:
    rt = runtime(prefix)
    slots = register_slots(rt.store.client, prefix, "hostA", "PreCommit1", 8)
    yield slots
    slots.unregister()


@pytest.fixture
def supervised(farm_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALPOOL_CREATE_INTERVAL_S", "0")
    monkeypatch.setenv("SEALPOOL_LOOKAHEAD", "0")
    monkeypatch.setenv("SEALPOOL_CC_FILL", "true")
    return farm_env


@pytest.fixture
def miners(pc1_slots: SlotPool, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the pool's miners, with 8 free PC1 slots registered on hostA."""
    return partial(with_miners, monkeypatch)


def with_miners(monkeypatch: pytest.MonkeyPatch, *miners: dict) -> None:
    monkeypatch.setenv("SEALPOOL_MINERS", json.dumps(list(miners)))
    runtime.cache_clear()


def started_miners(prefix: str) -> list[str]:
    """The miner of each sector one supervisor tick starts, in order."""
    rt = runtime(prefix)
    return [rt.store.get(i).miner for i in Supervisor(rt, "sup").tick().started]


def test_bitfield_runs_as_statemineralocated_shows_them() -> None:
    assert runs_of([0, 1, 2, 8, 9]) == [0, 3, 5, 2]
    assert runs_of([]) == [] and highest_in([]) is None
    runs = runs_of([3, 4, 100, 101, 102, 500])
    assert highest_in(runs) == 500
    assert highest_in(runs, 100, 199) == 102 and highest_in(runs, 5, 99) is None
    assert highest_in(runs, 101, 101) == 101


def test_shares_split_new_sectors_in_proportion(prefix: str, miners: Callable[..., None]) -> None:
    miners({"id": "f01000", "share": 3}, {"id": "f02000"})
    assert Counter(started_miners(prefix)) == {"f01000": 6, "f02000": 2}  # 8 free PC1 slots


def test_priority_serves_a_miner_first_up_to_its_max_sealing(
    prefix: str, miners: Callable[..., None]
) -> None:
    miners(
        {"id": "f01000", "priority": 1},
        {"id": "f02000", "priority": 0, "max_sealing": 3},
        {"id": "f03000", "cc_fill": False},
    )
    rt = runtime(prefix)
    pending = rt.store.create("f02000", "cc")  # the operator's: counts against the cap too
    order = started_miners(prefix)
    assert order == ["f02000"] * 3 + ["f01000"] * 5
    assert rt.store.get(pending.id).state is S.ADD_PIECE


def test_new_numbers_are_above_those_allocated_on_chain(
    prefix: str, miners: Callable[..., None]
) -> None:
    miners({"id": "f01000"}, {"id": "f02000", "cc_fill": False})
    rt = runtime(prefix)
    rt.chain_for("f01000").allocate(*range(1, 41), 57)  # sealed before sealpool
    rt.chain_for("f02000").allocate(900)  # another actor's numbers don't matter
    sectors = rt.store.get_many(Supervisor(rt, "sup").tick().started)
    assert sorted(s.number for s in sectors) == list(range(58, 66))
    code, out = run("sectors", "add", "--kind", "cc", "--miner", "f02000", "--json")
    assert code == 0, out
    assert [s["id"] for s in json.loads(out)] == ["f02000-901"]


def test_a_reserved_range_is_respected_and_its_end_refused(
    prefix: str, miners: Callable[..., None]
) -> None:
    miners(
        {"id": "f01000", "first_number": 1000, "last_number": 1004},
        {"id": "f02000", "cc_fill": False},
    )
    rt = runtime(prefix)
    rt.chain_for("f01000").allocate(999, 1001, 5000)  # 1001 taken in the range
    numbers = [rt.store.get(i).number for i in Supervisor(rt, "sup").tick().started]
    assert numbers == [1002, 1003, 1004]  # then the range is used up: no more, no crash
    with pytest.raises(NumbersExhausted, match="f01000: sector numbers up to 1004 are used up"):
        rt.store.create("f01000", "cc", numbers=(1000, 1004))
    code, out = run("sectors", "add", "--kind", "cc", "--miner", "f01000")
    assert code == 1 and out.strip().splitlines() == [
        "Error: miner f01000: sector numbers up to 1004 are used up (1 asked from 1005 on): "
        "raise its last_number"
    ]
    code, out = run("sectors", "add", "--kind", "cc", "--miner", "f09000")
    assert code == 1 and "miner 'f09000' is not configured (miners: f01000, f02000)" in out


def test_bad_miners_setting_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALPOOL_MINERS", '[{"id": "f01000", "first_number": 9, "last_number": 2}]')
    code, out = run("pool", "stats")
    assert code != 0 and len(out.strip().splitlines()) == 1
    assert "miners" in out and "last_number is below first_number" in out


def test_a_number_precommitted_or_allocated_before_is_refused_per_actor(
    client: redis.Redis, prefix: str
) -> None:
    one = SimChain(client, prefix, time_scale=3000, start_epoch=10_000, miner="f01000")
    two = SimChain(client, prefix, time_scale=3000, start_epoch=10_000, miner="f02000")
    one.allocate(5)

    def precommit(chain: SimChain, number: int, uuid: str) -> int:
        params = encode_precommits([precommit_of(chain, number)])
        return landed(chain, chain.push(PRE_COMMIT_SECTOR_BATCH2, params, DEPOSIT, uuid)).exit_code

    assert precommit(one, 7, "a") == 0
    assert precommit(one, 7, "b") == 16  # already precommitted
    assert precommit(one, 5, "c") == 16  # allocated before
    assert precommit(two, 7, "d") == 0 and precommit(two, 5, "e") == 0  # another actor
    assert highest_in(one.allocated()) == 7 and two.allocated() == runs_of([5, 7])


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


class SharedHostFarm(LocalFarm):
    """One host whose scratch holds two sectors, its PC2 and C2 slots on GPU 0."""

    def profile_text(self, host: str, temp: list[Path], sealed: list[Path]) -> str:
        text = super().profile_text(host, temp, sealed)
        path = f'path = "{temp[0]}"'
        text = text.replace(f"{path} }}", f"{path}, capacity = {CAPACITY} }}")
        for phase in ("PreCommit2", "Commit2"):
            slots = f"[phases.{phase}]\nslots = 1"
            text = text.replace(slots, f"{slots}\ngpus = [[0]]")
        return text + '\n[[gpu_groups]]\nphases = ["PreCommit2", "Commit2"]\ngpus = [0]\n'


SCRATCH_SECTORS = 2
CAPACITY = SCRATCH_SECTORS * 126976  # the sim backend's scratch per sector


def test_two_miners_on_one_host_never_overbook_scratch_or_a_gpu(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_miners(monkeypatch, {"id": "f01000"}, {"id": "f02000"})
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 3) + store.create_many("f02000", "cc", 3)
    # PC2 (4 s wall) outlasts the seed wait (156 epochs of 30 s: 2.3 s wall), so one sector's
    # C2 is claimed while the other's PC2 holds GPU 0
    times = {"AddPiece": 100, "PreCommit1": 300, "PreCommit2": 8000, "Commit1": 20,
             "Commit2": 200, "Finalize": 50, "PreCommitting": 30, "Committing": 30}  # fmt: skip
    env = {
        "SEALPOOL_TIME_SCALE": "2000", "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HEARTBEAT_S": "0.5", "SEALPOOL_PHASE_SECONDS": json.dumps(times),
        "SEALPOOL_RETRY_BACKOFF_S": "5", "SEALPOOL_MAX_ATTEMPTS": "30",
        "SEALPOOL_MINERS": json.dumps([{"id": "f01000"}, {"id": "f02000"}]),
    }  # fmt: skip
    with SharedHostFarm(prefix, ["hostA"], farm_env / "farm", slots=FARM_SLOTS, env=env) as farm:
        farm.wait_ready()
        for sector in sectors:
            start(store, sector.id, actor="test")
        done = wait_for(store, [s.id for s in sectors], timeout_s=180)
    assert [s.state for s in done] == [S.PROVING] * 6
    runs = [phase_runs(s.id, store.history(s.id)) for s in done]
    # scratch reserved by the end of the last AddPiece, released by the end of Finalize
    holding = [
        replace(r[-1], started_ms=[x for x in r if x.phase == "AddPiece"][-1].ended_ms)
        for r in runs
    ]
    assert most_at_once(holding) <= SCRATCH_SECTORS  # both miners' sectors, one ledger
    refused = [h for s in done for h in store.history(s.id) if "no temp path on hostA" in h.detail]
    assert refused  # the ledger, not luck, kept the third sector out
    for phase in ("PreCommit2", "Commit2"):  # one GPU slot each, whichever miner
        assert most_at_once([x for r in runs for x in r if x.phase == phase]) == 1
    pc2, c2 = ([x for r in runs for x in r if x.phase == p] for p in ("PreCommit2", "Commit2"))
    # a C2 was claimed while a PC2 ran: only the GPU lock kept the two apart
    assert any(a.started_ms < b.ended_ms and b.started_ms < a.ended_ms for a in pc2 for b in c2)
    assert_gpu_never_shared_at_once(done)
    rt = runtime(prefix)
    for miner in ("f01000", "f02000"):  # each proven on its own actor
        assert set(rt.chain_for(miner).proven()) == {1, 2, 3}


def assert_gpu_never_shared_at_once(done: list[Sector]) -> None:
    """No two PC2 or C2 windows of GPU lock holding (as the slot pool recorded them in the
    phase's outputs, on the Redis server's clock) overlap on one GPU of one host, across
    both miners; and both phases of both miners did hold hostA's GPU 0, so it was shared."""
    windows: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    users: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for sector in done:
        for phase in ("PreCommit2", "Commit2"):
            held = sector.outputs[phase]["gpu_held"]
            assert "lost" not in held, f"{phase} of {sector.id} lost its GPU lock"
            start, end = held["ms"]
            assert start <= end
            for lock in held["locks"]:
                gpu = (held["host"], lock)
                windows.setdefault(gpu, []).append((start, end, f"{phase} of {sector.id}"))
                users.setdefault(gpu, set()).add((phase, sector.miner))
    assert set(windows) == {("hostA", "gpu-0")}
    every = {(p, m) for p in ("PreCommit2", "Commit2") for m in ("f01000", "f02000")}
    assert users["hostA", "gpu-0"] == every
    shared = sorted(windows["hostA", "gpu-0"])
    for (_, end, who), (start, _, after) in pairwise(shared):
        assert end <= start, f"{who} held GPU 0 of hostA until {end}, {after} from {start}"
