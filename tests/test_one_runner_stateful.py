"""Random interleavings of everything that can happen to one sector, against a real Redis.

Hypothesis drives starts (by several supervisors), claims with the current or an old
message, renewals, lease expiry, take-overs, completions, retries, re-tickets, aborts and
operator resumes, in any order, and checks after every step:

* never two live leases: only the newest claim's token can renew or finish;
* never a completion from a stale attempt;
* never two claimable messages for one sector: only its current message id claims;
* the history agrees with the state: each move starts where the last one ended, and the
  record's version counts them.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid

import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sealpool.errors import ChangedMeanwhile, IllegalTransition, StaleToken
from sealpool.store import WORK_PHASES, Lease, PhaseStatus, SectorState, SectorStore

S = SectorState
NOTES = {"dispatch"}  # written after the send, maybe once the sector has moved on


def test_one_sector_under_random_interleavings(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    class OneSector(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"stateful-{uuid.uuid4().hex[:10]}"
            self.store = SectorStore(client, prefix=self.prefix, lease_s=30)
            self.sector_id = self.store.create("f01000", "cc").id
            self.leases: list[Lease] = []  # every lease ever won, oldest first
            self.messages: list[str] = []  # every message id ever seen

        def teardown(self) -> None:
            keys = list(client.scan_iter(f"{self.prefix}:*"))
            if keys:
                client.delete(*keys)

        def current(self):
            sector = self.store.get(self.sector_id)
            if sector.msg_id and sector.msg_id not in self.messages:
                self.messages.append(sector.msg_id)
            return sector

        @rule(supervisor=st.integers(0, 2))
        def start(self, supervisor: int) -> None:
            was_pending = self.current().state is S.PENDING
            try:
                self.store.start(self.sector_id, actor=f"sup-{supervisor}")
                assert was_pending, "started twice"
            except IllegalTransition:
                assert not was_pending

        @rule(pick=st.integers(0, 5), current_message=st.booleans())
        def claim(self, pick: int, current_message: bool) -> None:
            sector = self.current()
            if current_message or not self.messages:
                message = sector.msg_id
            else:
                message = self.messages[pick % len(self.messages)]
            claimable = (
                sector.state in WORK_PHASES
                and sector.status is PhaseStatus.QUEUED
                and message == sector.msg_id
            )
            lease = self.store.claim(self.sector_id, sector.state, f"w{pick}", message=message)
            assert (lease is not None) == claimable, (sector, message)
            if lease is not None:
                assert all(lease.token > old.token for old in self.leases)
                self.leases.append(lease)

        @rule()
        def expire(self) -> None:
            """Time passes beyond the newest lease (the worker hung)."""
            sector = self.current()
            if sector.status is PhaseStatus.RUNNING:
                client.hset(self.store.keys.sector(self.sector_id), "lease_expires_ms", 1)
                client.zadd(self.store.keys.leases, {self.sector_id: 1})

        @rule()
        def take_over(self) -> None:
            sector = self.current()
            expired = sector.status is PhaseStatus.RUNNING and (sector.lease_expires_ms or 0) <= 1
            taken = self.store.take_over(sector, sector.state, actor="sup", detail="expired")
            assert (taken is not None) == expired

        @rule(pick=st.integers(0, 5), action=st.sampled_from(["renew", "complete", "retry",
                                                               "fail", "release"]))  # fmt: skip
        def act_with_a_lease(self, pick: int, action: str) -> None:
            if not self.leases:
                return
            lease = self.leases[pick % len(self.leases)]
            sector = self.current()
            holds = sector.status is PhaseStatus.RUNNING and sector.lease_token == lease.token
            live = holds and (sector.lease_expires_ms or 0) > 1
            calls = {
                "renew": lambda: self.store.renew(lease),
                "complete": lambda: self.store.complete(lease),
                "retry": lambda: self.store.fail(lease, "boom", retry=True),
                "fail": lambda: self.store.fail(lease, "boom", retry=False),
                "release": lambda: self.store.release(lease),
            }
            try:
                calls[action]()
                assert live if action == "renew" else holds, f"stale {action} accepted"
            except StaleToken:
                assert not (live if action == "renew" else holds), f"live {action} refused"

        @rule(target_state=st.sampled_from([S.PRE_COMMIT_1, S.ABORTED]))
        def supervisor_move(self, target_state: SectorState) -> None:
            sector = self.current()
            with contextlib.suppress(IllegalTransition, ChangedMeanwhile):
                self.store.move(
                    self.sector_id, target_state, actor="sup", expected_version=sector.version
                )

        @rule(phase=st.sampled_from(WORK_PHASES))
        def operator_resume(self, phase: SectorState) -> None:
            sector = self.current()
            try:
                self.store.move(
                    self.sector_id,
                    phase,
                    actor="operator",
                    sources=[S.FAILED],
                    expected_version=sector.version,
                )
            except IllegalTransition:
                assert sector.state is not S.FAILED

        @invariant()
        def only_the_newest_lease_holds(self) -> None:
            sector = self.current()
            if sector.status is PhaseStatus.RUNNING:
                assert self.leases and sector.lease_token == self.leases[-1].token
            else:
                assert sector.lease_token is None
                assert self.sector_id not in client.zrange(self.store.keys.leases, 0, -1)

        @invariant()
        def one_message_at_most(self) -> None:
            sector = self.current()
            queued = sector.status is PhaseStatus.QUEUED
            assert (sector.msg_id is not None) == queued
            outbox = client.zscore(self.store.keys.outbox, self.sector_id)
            unclaimed = client.zscore(self.store.keys.unclaimed, self.sector_id)
            assert not (outbox and unclaimed) and ((outbox is not None) <= queued)

        @invariant()
        def history_agrees_with_the_state(self) -> None:
            sector = self.current()
            moves = [h for h in self.store.history(self.sector_id) if h.event not in NOTES]
            for before, after in itertools.pairwise(moves):
                assert after.from_state == before.to_state, (before, after)
            assert moves[-1].to_state == sector.state.value
            index = {
                state for state in SectorState if self.sector_id in self.store.ids_in_state(state)
            }
            assert index == {sector.state}

    run_state_machine_as_test(
        OneSector, settings=settings(max_examples=60, stateful_step_count=40, deadline=None)
    )
