"""Batches of precommits and prove-commits against the strict sim chain on a real Redis."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from sealpool.backends import ExternalBackend
from sealpool.chain import SimChain
from sealpool.chain.batching import BatchBook, Member, activation_entry, precommit_entry
from sealpool.chain.commitments import SEALED, commitment_cid
from sealpool.chain.messages import Activation, PreCommit, decode_prove_commits
from sealpool.chain.policy import SEAL_PROOF, expiration, seed_epoch
from sealpool.chain.sim import DEPOSIT, PLEDGE, sim_aggregate, sim_proof
from sealpool.config import Settings
from sealpool.errors import ChainError
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.sealing_tasks.batched import PoolView, aggregator_of
from sealpool.store import PIPELINE, Randomness, SectorState, SectorStore

from farm_helpers import wait_for, worker
from helpers import wait_until

S = SectorState
PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]
SCALE = 3000  # an epoch is 10 ms


def _settings(**changes: object) -> Settings:
    return Settings(time_scale=SCALE, message_confidence=2, **changes)  # type: ignore[arg-type]


def _chain(client: redis.Redis, prefix: str) -> SimChain:
    return SimChain(client, prefix, time_scale=SCALE, start_epoch=10_000)


def _precommit_member(
    chain: SimChain, number: int, ticket_epoch: int | None = None, seal_proof: int = 8
) -> Member:
    head = chain.head()
    ticket = head - 900 if ticket_epoch is None else ticket_epoch
    comm_r = commitment_cid(SEALED, hashlib.sha256(f"r{number}".encode()).digest())
    precommit = PreCommit(seal_proof, number, comm_r, ticket, expiration(head, ticket))
    return Member(f"f01000-{number}", "precommit", "f01000", precommit_entry(precommit),
                  DEPOSIT, cutoff=ticket + 3780)  # fmt: skip


def _aggregate(_miner: str, activations: list[Activation]) -> bytes:
    return sim_aggregate([activation.proof for activation in activations])


def _pump_until(book: BatchBook, chain: SimChain, done: object, aggregate: bool = True) -> None:
    def pumped() -> bool:
        book.pump(lambda _miner: chain, _aggregate if aggregate else None)
        return bool(done())  # type: ignore[operator]

    wait_until(pumped, 30)


def _landed(book: BatchBook, ids: list[str]) -> bool:
    return all((m := book.member(i)) is not None and m.outcome for i in ids)


def test_precommits_of_n_sectors_go_in_one_message(client: redis.Redis, prefix: str) -> None:
    chain = _chain(client, prefix)
    book = BatchBook(client, prefix, _settings(max_precommit_batch=6))
    members = [book.enroll(_precommit_member(chain, n), chain.head()) for n in range(1, 7)]
    assert len({m.batch for m in members}) == 1
    _pump_until(book, chain, lambda: _landed(book, [m.sector_id for m in members]))
    assert chain.messages_sent() == {28: 1}
    assert all(book.member(m.sector_id).outcome == "landed" for m in members)  # type: ignore[union-attr]
    assert all(chain.precommit_epoch(n) for n in range(1, 7))
    assert book.batch(members[0].batch).state == "landed"  # type: ignore[union-attr]


def test_batch_cut_early_by_its_nearest_ticket_expiry(client: redis.Redis, prefix: str) -> None:
    chain = _chain(client, prefix)
    settings = _settings(precommit_batch_wait_s=24 * 3600, precommit_batch_slack_s=3 * 3600)
    book = BatchBook(client, prefix, settings)
    head = chain.head()
    late = book.enroll(_precommit_member(chain, 1), head)  # expires in ~2880 epochs: waits
    book.pump(lambda _m: chain, None)
    assert book.batch(late.batch).state == "open"  # type: ignore[union-attr]
    # expires within the slack (360 epochs): the whole batch is cut now, a day early
    near = book.enroll(_precommit_member(chain, 2, ticket_epoch=head - 3700), head)
    assert near.batch == late.batch
    book.pump(lambda _m: chain, None)
    batch = book.batch(late.batch)
    assert batch is not None and batch.state == "sent" and "cut-off" in batch.cut
    _pump_until(book, chain, lambda: _landed(book, ["f01000-1", "f01000-2"]))
    assert chain.messages_sent() == {28: 1}


def test_short_funds_wait_then_resume(client: redis.Redis, prefix: str) -> None:
    chain = _chain(client, prefix)
    chain.fund(DEPOSIT)  # two sectors need twice that
    book = BatchBook(client, prefix, _settings(precommit_batch_wait_s=0))
    head = chain.head()
    first = book.enroll(_precommit_member(chain, 1), head)
    book.enroll(_precommit_member(chain, 2), head)
    book.pump(lambda _m: chain, None)
    batch = book.batch(first.batch)
    assert batch is not None and batch.state == "waiting"
    assert batch.reason == "waiting for funds: need 0.4 FIL, have 0.2 FIL"
    assert chain.messages_sent() == {}
    chain.fund(10 * DEPOSIT)
    _pump_until(book, chain, lambda: _landed(book, ["f01000-1", "f01000-2"]))
    assert book.batch(first.batch).state == "landed"  # type: ignore[union-attr]


class CrashAfterPush:
    """The sim chain, but the process 'dies' right after its first push returns."""

    def __init__(self, chain: SimChain) -> None:
        self.chain, self.crashed = chain, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.chain, name)

    def push(self, *args: object) -> str:
        cid = self.chain.push(*args)  # type: ignore[arg-type]
        if not self.crashed:
            self.crashed = True
            raise ChainError("connection lost after the push")
        return cid


def test_crash_between_send_and_record_sends_once(client: redis.Redis, prefix: str) -> None:
    chain = _chain(client, prefix)
    crashing = CrashAfterPush(chain)
    book = BatchBook(client, prefix, _settings(precommit_batch_wait_s=0))
    member = book.enroll(_precommit_member(chain, 1), chain.head())
    book.pump(lambda _m: crashing, None)  # type: ignore[arg-type, return-value]
    batch = book.batch(member.batch)
    assert batch is not None and batch.state == "sending" and batch.cid is None
    _pump_until(book, crashing, lambda: _landed(book, [member.sector_id]))  # type: ignore[arg-type]
    assert chain.messages_sent() == {28: 1}  # the same MsgUuid again: no second message


def test_failed_batch_is_split_and_retried(client: redis.Redis, prefix: str) -> None:
    chain = _chain(client, prefix)
    chain.allocate(3)  # sector 3's number is taken: its batch fails with 16
    book = BatchBook(client, prefix, _settings(precommit_batch_wait_s=0))
    head = chain.head()
    ids = [book.enroll(_precommit_member(chain, n), head).sector_id for n in (1, 2, 3, 4)]
    _pump_until(book, chain, lambda: _landed(book, ids))
    outcomes = {i: book.member(i).outcome for i in ids}  # type: ignore[union-attr]
    assert outcomes == {"f01000-1": "landed", "f01000-2": "landed", "f01000-3": "failed",
                        "f01000-4": "landed"}  # fmt: skip
    assert book.member("f01000-3").exit_code == 16  # type: ignore[union-attr]
    # 4 sectors, then halves of 2 (one fails), then halves of 1: 5 messages, none dropped
    assert chain.messages_sent() == {28: 5}
    states = sorted(b.state for b in book.batches())
    assert states == ["failed", "failed", "failed", "landed", "landed"]


def _proven_members(chain: SimChain, book: BatchBook, numbers: list[int]) -> list[str]:
    """Precommit ``numbers`` in one batch, wait for their seeds, enroll their proofs."""
    ids = [book.enroll(_precommit_member(chain, n), chain.head()).sector_id for n in numbers]
    _pump_until(book, chain, lambda: _landed(book, ids))
    for sector_id in ids:
        book.forget(sector_id)
    epoch = chain.precommit_epoch(numbers[0])
    assert epoch is not None
    wait_until(lambda: chain.head() > seed_epoch(epoch) + 6, 30)
    for number in numbers:
        raw = chain.client.hget(f"{chain.key}:precommits", str(number))
        record = json.loads(raw)
        ticket = chain.randomness("ticket", record["ticket_epoch"], "f01000")
        seed = chain.randomness("seed", seed_epoch(record["epoch"]), "f01000")
        proof = sim_proof("f01000", number, record["comm_r"], ticket, seed)
        entry = activation_entry(Activation(number, proof))
        value = PLEDGE - DEPOSIT
        member = Member(
            f"f01000-{number}", "commit", "f01000", entry, value, record["epoch"] + 86550
        )
        book.enroll(member, chain.head())
    return ids


@pytest.mark.parametrize(("count", "aggregated"), [(5, True), (3, False)])
def test_prove_commit_aggregates_from_four_sectors(
    client: redis.Redis, prefix: str, count: int, aggregated: bool
) -> None:
    chain = _chain(client, prefix)
    book = BatchBook(client, prefix, _settings(precommit_batch_wait_s=0, commit_batch_wait_s=0))
    sent: list[bytes] = []
    original = chain.push

    def push(method: int, params: bytes, value: int, uuid: str, max_fee: int = 0) -> str:
        sent.append(params)
        return original(method, params, value, uuid, max_fee)

    chain.push = push  # type: ignore[method-assign]
    ids = _proven_members(chain, book, list(range(1, count + 1)))
    _pump_until(book, chain, lambda: _landed(book, ids))
    assert [book.member(i).reason for i in ids] == [""] * count  # type: ignore[union-attr]
    assert set(chain.proven()) == set(range(1, count + 1))
    assert chain.messages_sent() == {28: 1, 34: 1}
    activations, aggregate = decode_prove_commits(sent[-1])
    assert len(activations) == count and (aggregate is not None) is aggregated


def test_prove_commit_carries_the_example_processors_aggregate(
    client: redis.Redis, prefix: str
) -> None:
    """The processor's Aggregate request makes the proof the (strict) chain verifies."""
    chain = _chain(client, prefix)
    book = BatchBook(client, prefix, _settings(precommit_batch_wait_s=0, commit_batch_wait_s=0))
    ids = _proven_members(chain, book, [1, 2, 3, 4])
    aggregate = aggregator_of(ExternalBackend(PROCESSOR), 8)

    def pumped() -> bool:
        book.pump(lambda _miner: chain, aggregate)
        return _landed(book, ids)

    wait_until(pumped, 30)
    assert {book.member(i).outcome for i in ids} == {"landed"}  # type: ignore[union-attr]
    assert set(chain.proven()) == {1, 2, 3, 4} and chain.messages_sent() == {28: 1, 34: 1}
    commit = next(b for b in book.batches() if b.kind == "commit")
    assert commit.reason == "method 34, 4 sectors"


def test_failed_precommit_reticketed_sends_a_new_message(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A precommit refused on chain fails its sector; resumed from PreCommit1 (a new
    ticket), the sector is enrolled again and precommitted in a new message."""
    rt = runtime(prefix)
    store, chain = rt.store, rt.chain
    assert isinstance(chain, SimChain)
    sector = store.create_many("f01000", "cc", 1)[0]
    chain.allocate(sector.number)  # the actor refuses the first precommit (16)
    with worker(prefix):
        start(store, sector.id, actor="test")
        (failed,) = wait_for(store, [sector.id], timeout_s=90)
        assert failed.state is S.FAILED and "exit code 16" in (failed.last_error or "")
        assert "batch" not in failed.outputs["PreCommitting"]  # may be re-ticketed
        client = store.client
        client.srem(f"{chain.key}:allocated", sector.number)  # the number is free again
        store.move(sector.id, S.PRE_COMMIT_1, actor="test", updates={"ticket": None})
        from sealpool.sealing_tasks import dispatch

        dispatch(store, store.get(sector.id))
        (done,) = wait_for(store, [sector.id], timeout_s=90)
    assert done.state is S.PROVING, done.last_error
    assert done.ticket is not None and done.ticket.epoch != failed.ticket.epoch  # type: ignore[union-attr]
    assert chain.messages_sent()[28] == 2  # the refused precommit, then a new one
    assert done.outputs["PreCommitting"]["cid"] != failed.outputs["PreCommitting"]["failed"]


def _walk(store: SectorStore, sector_id: str, target: SectorState, ticket: int) -> None:
    """Move a sector along the pipeline to ``target``, its ticket of epoch ``ticket``."""
    state = store.get(sector_id).state
    while state is not target:
        state = PIPELINE[PIPELINE.index(state) + 1]
        updates = {"ticket": Randomness(epoch=ticket, value="11" * 32)}
        store.move(sector_id, state, actor="test", updates=updates)


def _pool_batch(prefix: str, wait_s: float = 24 * 3600) -> tuple[BatchBook, SimChain, PoolView]:
    """A precommit book of long waits on the farm's pool, its sim chain and the pool's view."""
    rt = runtime(prefix)
    assert isinstance(rt.chain, SimChain)
    book = BatchBook(rt.store.client, prefix, _settings(precommit_batch_wait_s=wait_s))
    return book, rt.chain, PoolView(rt)


def _enrolled(prefix: str, book: BatchBook, chain: SimChain, count: int) -> list[Member]:
    """``count`` sectors in PreCommitting, enrolled in one batch."""
    rt = runtime(prefix)
    store, head, seal_proof = rt.store, chain.head(), SEAL_PROOF[rt.settings.sector_size]
    members = []
    for sector in store.create_many("f01000", "cc", count):
        member = _precommit_member(chain, sector.number, seal_proof=seal_proof)
        _walk(store, sector.id, S.PRE_COMMITTING, member.entry["ticket_epoch"])
        members.append(book.enroll(replace(member, sector_id=sector.id), head))
    return members


def test_batch_waits_while_a_sector_is_in_precommit2(farm_env: Path, prefix: str) -> None:
    book, chain, pool = _pool_batch(prefix)
    (member,) = _enrolled(prefix, book, chain, 1)
    (upstream,) = runtime(prefix).store.create_many("f01000", "cc", 1)
    _walk(runtime(prefix).store, upstream.id, S.PRE_COMMIT_2, 1)
    book.pump(lambda _m: chain, None, pool)
    assert book.batch(member.batch).state == "open"  # type: ignore[union-attr]
    assert chain.messages_sent() == {}


def test_batch_with_nothing_upstream_is_cut_at_once(farm_env: Path, prefix: str) -> None:
    book, chain, pool = _pool_batch(prefix)
    (member,) = _enrolled(prefix, book, chain, 1)
    book.pump(lambda _m: chain, None, pool)
    batch = book.batch(member.batch)
    assert batch is not None and batch.state == "sent" and batch.cut == "nothing on its way"
    _pump_until(book, chain, lambda: _landed(book, [member.sector_id]))
    assert book.member(member.sector_id).outcome == "landed"  # type: ignore[union-attr]


def test_batch_is_cut_when_upstream_cannot_arrive_within_its_wait(
    farm_env: Path, prefix: str
) -> None:
    """A sector in PreCommit1 still has a PreCommit2 (900 farm s) to go: a batch waiting
    600 s more won't see it."""
    book, chain, pool = _pool_batch(prefix, wait_s=600)
    (member,) = _enrolled(prefix, book, chain, 1)
    (upstream,) = runtime(prefix).store.create_many("f01000", "cc", 1)
    _walk(runtime(prefix).store, upstream.id, S.PRE_COMMIT_1, 1)
    book.pump(lambda _m: chain, None, pool)
    batch = book.batch(member.batch)
    assert batch is not None and batch.state == "sent"
    assert batch.cut.startswith("nothing on its way before epoch")


def test_members_gone_from_their_phase_or_reticketed_are_dropped_at_cut(
    farm_env: Path, prefix: str
) -> None:
    book, chain, pool = _pool_batch(prefix)
    store = runtime(prefix).store
    kept, aborted, reticketed = _enrolled(prefix, book, chain, 3)
    store.move(aborted.sector_id, S.ABORTED, actor="test")
    # failed, re-ticketed and back in PreCommitting before the batch was cut
    store.move(reticketed.sector_id, S.FAILED, actor="test")
    store.move(reticketed.sector_id, S.PRE_COMMIT_1, actor="test", updates={"ticket": None})
    _walk(store, reticketed.sector_id, S.PRE_COMMITTING, chain.head() - 10)
    book.pump(lambda _m: chain, None, pool)
    batch = book.batch(kept.batch)
    assert batch is not None and batch.state == "sent", batch
    assert batch.members == [kept.sector_id] and batch.value == DEPOSIT
    assert f"{aborted.sector_id}: now Aborted" in batch.cut
    assert f"{reticketed.sector_id}: re-ticketed since it enrolled" in batch.cut
    assert book.member(aborted.sector_id) is None and book.member(reticketed.sector_id) is None
    _pump_until(book, chain, lambda: _landed(book, [kept.sector_id]))
    assert book.member(kept.sector_id).outcome == "landed"  # type: ignore[union-attr]
    numbers = [store.get(m.sector_id).number for m in (kept, aborted, reticketed)]
    assert [chain.precommit_epoch(n) is not None for n in numbers] == [True, False, False]
