"""Claims, fencing tokens, renewals and fenced completion."""

from __future__ import annotations

import threading

import pytest
import redis

from sealpool.errors import StaleToken
from sealpool.store import PhaseStatus, SectorState, SectorStore

from helpers import place, wait_until

S = SectorState


def test_eight_threads_racing_get_exactly_one_token(redis_url: str, prefix: str) -> None:
    setup = SectorStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    for _round in range(20):
        sector = place(setup, S.PRE_COMMIT_1)
        barrier = threading.Barrier(8)
        leases = []

        def race(worker: int, sector_id: str = sector.id, barrier=barrier, leases=leases) -> None:
            own = SectorStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
            barrier.wait()
            leases.append(own.claim(sector_id, S.PRE_COMMIT_1, f"worker-{worker}"))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = [lease for lease in leases if lease is not None]
        assert len(leases) == 8 and len(won) == 1
        assert setup.get(sector.id).lease_owner == won[0].worker
        assert setup.get(sector.id).attempts == {"PreCommit1": 1}


def test_claim_needs_the_right_phase_and_a_queued_status(store: SectorStore) -> None:
    sector = place(store, S.PRE_COMMIT_2)
    assert store.claim(sector.id, S.PRE_COMMIT_1, "w") is None
    assert store.claim(place(store, S.PENDING).id, S.PENDING, "w") is None
    lease = store.claim(sector.id, S.PRE_COMMIT_2, "w1")
    assert lease is not None
    assert store.claim(sector.id, S.PRE_COMMIT_2, "w2") is None  # live lease held elsewhere
    running = store.get(sector.id)
    assert running.status is PhaseStatus.RUNNING and running.lease_token == lease.token
    assert lease.sector == running  # the claim hands over the record it left


def test_tokens_only_grow(store: SectorStore) -> None:
    tokens = []
    for _ in range(5):
        sector = place(store, S.ADD_PIECE)
        lease = store.claim(sector.id, S.ADD_PIECE, "w")
        assert lease is not None
        tokens.append(lease.token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 5


def test_stale_token_is_refused_after_the_lease_expires(store: SectorStore) -> None:
    sector = place(store, S.PRE_COMMIT_2)
    late = store.claim(sector.id, S.PRE_COMMIT_2, "frozen", lease_s=0.2)
    assert late is not None
    assert store.claim(sector.id, S.PRE_COMMIT_2, "live") is None
    wait_until(lambda: store.expired_leases() == [sector.id])
    assert store.claim(sector.id, S.PRE_COMMIT_2, "live") is None  # only a take-over frees it
    taken = store.take_over(store.get(sector.id), S.PRE_COMMIT_2, actor="sup", detail="expired")
    assert taken is not None and taken.status is PhaseStatus.QUEUED
    live = store.claim(sector.id, S.PRE_COMMIT_2, "live", message=taken.msg_id)
    assert live is not None and live.token > late.token
    for stale_call in (
        lambda: store.renew(late),
        lambda: store.complete(late),
        lambda: store.fail(late, "boom", retry=True),
        lambda: store.release(late),
    ):
        with pytest.raises(StaleToken):
            stale_call()
    assert store.get(sector.id).lease_owner == "live"
    done = store.complete(live, {"temp_path": "/scratch/x"})
    assert done == store.get(sector.id)
    assert done.state is S.PRE_COMMITTING and done.status is PhaseStatus.QUEUED
    assert done.temp_path == "/scratch/x" and done.lease_token is None
    assert store.expired_leases() == []


def test_renew_extends_the_lease(store: SectorStore) -> None:
    sector = place(store, S.COMMIT_2)
    lease_s = 60.0  # long enough that no scheduling delay can lapse it: what's tested is renewal
    lease = store.claim(sector.id, S.COMMIT_2, "gpu", lease_s=lease_s)
    assert lease is not None
    for _ in range(4):
        previous = lease.expires_ms
        ticked = lambda p=previous: store.now_ms() > p - 1000 * lease_s  # noqa: E731
        wait_until(ticked, what="the server clock moved on")
        asked_at = store.now_ms()
        lease = store.renew(lease, lease_s=lease_s)
        now = store.now_ms()
        assert lease.expires_ms > previous  # each renewal really extended it
        assert asked_at + 1000 * lease_s <= lease.expires_ms <= now + 1000 * lease_s
        assert lease.expires_ms > now  # still in the future on the server's clock
        assert store.get(sector.id).lease_expires_ms == lease.expires_ms
        assert store.client.zscore(store.keys.leases, sector.id) == lease.expires_ms
    assert store.claim(sector.id, S.COMMIT_2, "other") is None
    assert store.expired_leases() == []


def test_a_token_is_stale_once_the_sector_moved_on(store: SectorStore) -> None:
    sector = place(store, S.COMMIT_1)
    lease = store.claim(sector.id, S.COMMIT_1, "w")
    assert lease is not None
    store.move(sector.id, S.ABORTED, actor="operator")
    with pytest.raises(StaleToken):
        store.complete(lease)
    assert store.get(sector.id).state is S.ABORTED


def test_fail_with_retry_requeues_and_without_fails(store: SectorStore) -> None:
    sector = place(store, S.PRE_COMMIT_1)
    lease = store.claim(sector.id, S.PRE_COMMIT_1, "w")
    assert lease is not None
    assert store.fail(lease, "disk full", retry=True).state is S.PRE_COMMIT_1
    again = store.get(sector.id)
    assert again.status is PhaseStatus.QUEUED and again.last_error == "disk full"
    lease = store.claim(sector.id, S.PRE_COMMIT_1, "w")
    assert lease is not None
    assert store.fail(lease, "bad proof", retry=False).state is S.FAILED
    failed = store.get(sector.id)
    assert failed.state is S.FAILED and failed.last_error == "bad proof"
    assert failed.attempts == {"PreCommit1": 2}
    assert sector.id in store.ids_in_state(S.FAILED)


def test_release_hands_the_phase_back(store: SectorStore) -> None:
    sector = place(store, S.PRE_COMMIT_1)
    lease = store.claim(sector.id, S.PRE_COMMIT_1, "w1")
    assert lease is not None
    store.release(lease, "worker shutting down")
    assert store.get(sector.id).status is PhaseStatus.QUEUED
    assert store.claim(sector.id, S.PRE_COMMIT_1, "w2") is not None
