"""Sectors waiting in a batch: enrolled by their phase, moved on when the batch lands.

PreCommitting and Committing enroll the sector in its batch (:mod:`sealpool.chain.batching`)
and raise :class:`Parked`: the runner releases the phase without a slot, its message due
only as a safety net. :func:`pump` advances the batches and moves every member of a landed
batch on to its next phase in one store move (PreCommitting → WaitSeed, seed epoch from the
on-chain PreCommitEpoch; Committing → Finalize), and wakes the members of a failed one so
their phase records the failure. It runs in the supervisor's tick and in a thread of each
worker process that enrolled a sector, while batches are live; a Redis lock lets one
process pump at a time.

The pump tells the batches about the pool (:class:`PoolView`): from the store's state counts,
when the next sector could enroll at the soonest — a sector in PreCommit2 any moment, one in
PreCommit1 after a PC2, and so on, by ``phase_seconds`` — so a batch nothing could join
before its wait runs out is cut at once; and, at cut time, which members' sectors have left
their phase or were re-ticketed since they enrolled (dropped from the batch). The counts are
the pool's, all miners together: a batch may wait for another miner's sectors, never less.

Aggregates come from the runtime's backend (:meth:`~sealpool.backends.base.Backend.aggregate`:
the sim's, or the processor's Aggregate request) unless ``aggregate_proofs`` is off; then
every prove-commit carries each sector's own proof, at most 30 a message.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sealpool.backends import AggregateRequest, Backend
from sealpool.chain.batching import Aggregator, BatchBook, Kind, Member
from sealpool.chain.messages import Activation
from sealpool.chain.policy import SEAL_PROOF, prove_commit_deadline, seed_epoch
from sealpool.config import EPOCH_SECONDS
from sealpool.errors import ChainError, ChangedMeanwhile, IllegalTransition
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.store import Sector, SectorState

log = logging.getLogger(__name__)
S = SectorState
PHASES = {"precommit": S.PRE_COMMITTING, "commit": S.COMMITTING}
NEXT = {"precommit": S.WAIT_SEED, "commit": S.FINALIZE}
# the states a sector passes through before it enrolls, in order
UPSTREAM = {
    "precommit": (S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2),
    "commit": (S.PRE_COMMITTING, S.WAIT_SEED, S.COMMIT_1, S.COMMIT_2),
}
MIN_PARK_S, MAX_PARK_S = 2.0, 600.0  # the safety-net message of a parked phase (wall s)
MIN_POLL_S = 0.02
_pumps: dict[int, threading.Thread] = {}
_pumps_lock = threading.Lock()


class Parked(Exception):
    """The phase left its sector in a batch: release it, its message due in ``delay_s``."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


def book(runtime: Runtime) -> BatchBook:
    return BatchBook(runtime.store.client, runtime.store.prefix, runtime.settings)


def aggregator_for(runtime: Runtime) -> Aggregator | None:
    """The runtime's backend as the maker of SnarkPack aggregates; None (each sector's own
    proof) when ``aggregate_proofs`` is off."""
    if not runtime.settings.aggregate_proofs:
        return None
    return aggregator_of(runtime.backend, SEAL_PROOF[runtime.settings.sector_size])


def aggregator_of(backend: Backend, seal_proof: int) -> Aggregator:
    """``backend``'s Aggregate, for sectors of ``seal_proof``."""

    def aggregate(miner: str, activations: list[Activation]) -> bytes:
        sectors, proofs = [a.number for a in activations], [a.proof for a in activations]
        return backend.aggregate(AggregateRequest(miner, sectors, seal_proof, proofs))

    return aggregate


class PoolView:
    """The pool as one pump sees it: its state counts (read once) and its sectors."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._counts: dict[S, int] | None = None

    def counts(self) -> dict[S, int]:
        if self._counts is None:
            by_kind = self.runtime.store.counts()
            self._counts = {state: sum(kinds.values()) for state, kinds in by_kind.items()}
        return self._counts

    def arrival_s(self, kind: Kind, enrolled: int) -> float | None:
        """Farm seconds until the soonest sector on its way could enroll: one in the
        enrolling phase but in no batch at once, one in an earlier state after the phases
        between (the seed's delay among them); None when none is on its way."""
        settings, counts = self.runtime.settings, self.counts()
        if counts[PHASES[kind]] > enrolled:
            return 0.0
        later = 0.0  # farm seconds of the states after the one looked at
        for state in reversed(UPSTREAM[kind]):
            if counts[state]:
                return later
            if state is S.WAIT_SEED:
                later += settings.precommit_challenge_delay * EPOCH_SECONDS
            else:
                later += settings.phase_seconds.get(state.value, 0.0)
        return None

    def stale(self, members: list[Member]) -> dict[str, str]:
        """Members whose sector is gone, left their phase, or changed its ticket."""
        sectors = self.runtime.store.get_many(m.sector_id for m in members)
        found = {sector.id: sector for sector in sectors}
        stale: dict[str, str] = {}
        for member in members:
            sector = found.get(member.sector_id)
            ticket = member.entry.get("ticket_epoch")
            if sector is None:
                stale[member.sector_id] = "removed"
            elif sector.state is not PHASES[member.kind]:
                stale[member.sector_id] = f"now {sector.state.value}"
            elif ticket is not None and (sector.ticket is None or sector.ticket.epoch != ticket):
                stale[member.sector_id] = f"re-ticketed since it enrolled (ticket {ticket})"
        return stale


def landed_updates(runtime: Runtime, sector: Sector, member: Member) -> dict[str, Any]:
    """The completion fields of a member whose batch landed."""
    phase = PHASES[member.kind]
    outputs: dict[str, Any] = {"cid": member.cid, "batch": member.batch}
    deadlines: dict[str, int] = {}
    if member.kind == "precommit":
        chain = runtime.chain_for(sector.miner)
        number = member.entry["number"]
        epoch = chain.precommit_epoch(number)
        if epoch is None:
            raise ChainError(f"{sector.id}: precommit {member.cid} landed, sector {number} not")
        deadlines["prove_commit"] = prove_commit_deadline(epoch)
        outputs.update(
            epoch=epoch, expiration=member.entry["expiration"], deposit=str(member.value),
            seed_epoch=seed_epoch(epoch, runtime.settings.precommit_challenge_delay),
        )  # fmt: skip
    else:
        outputs["epoch"] = (member.height or 1) - 1
    return {
        "deadlines": deadlines,
        "deadline_epoch": min(deadlines.values(), default=None),
        "outputs": {**sector.outputs, phase.value: outputs},
    }


def park_delay_s(runtime: Runtime, kind: str) -> float:
    """When a parked phase's safety-net message is due: about its batch's wait."""
    settings = runtime.settings
    wait_s = settings.commit_batch_wait_s
    if kind == "precommit":
        wait_s = settings.precommit_batch_wait_s
    return min(MAX_PARK_S, max(MIN_PARK_S, settings.wall_seconds(wait_s)))


def pump(runtime: Runtime, actor: str) -> None:
    """Advance every live batch once, then move on the members of settled ones."""
    batches = book(runtime)
    batches.pump(runtime.chain_for, aggregator_for(runtime), PoolView(runtime))
    for member in batches.settled():
        _settle(runtime, batches, member, actor)


def _settle(runtime: Runtime, batches: BatchBook, member: Member, actor: str) -> None:
    store, phase = runtime.store, PHASES[member.kind]
    sector = store.get(member.sector_id)
    if sector.state is not phase:  # moved on (its phase saw the outcome) or aborted
        batches.forget(member.sector_id)
        return
    bind = runtime.settings.host_binding
    if member.outcome == "failed":  # its phase records the failure, once woken
        if (
            sector.msg_id
            and sector.msg_sent_ms is None
            and (fresh := store.reissue(sector.id, sector.msg_id, 0.0, member.reason))
        ):
            dispatch(store, fresh, actor=actor, bind_host=bind)
        return
    from sealpool.sealing_tasks.steps import seed_wait_s

    try:
        updates = landed_updates(runtime, sector, member)
        delay_s = 0.0
        if member.kind == "precommit":
            delay_s = seed_wait_s(runtime, updates["outputs"][phase.value]["seed_epoch"])
        moved = store.move(
            sector.id, NEXT[member.kind], actor=actor, event="complete",
            detail=f"batch {member.batch} landed in {member.cid}", updates=updates,
            sources=[phase], delay_s=delay_s,
        )  # fmt: skip
    except (ChangedMeanwhile, IllegalTransition, ChainError) as exc:
        log.warning("%s not moved on: %s", sector.id, exc)
        return
    batches.forget(member.sector_id)
    dispatch(store, moved, actor=actor, bind_host=bind)


def ensure_pump(runtime: Runtime, actor: str) -> None:
    """Pump in a thread of this process while its pool has live or settled batches."""
    with _pumps_lock:
        thread = _pumps.get(id(runtime))
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(
            target=_pump_while_live, args=(runtime, actor), name="sealpool-batches", daemon=True
        )
        _pumps[id(runtime)] = thread
        thread.start()


def _pump_while_live(runtime: Runtime, actor: str) -> None:
    poll_s = max(MIN_POLL_S, runtime.settings.wall_seconds(EPOCH_SECONDS))
    batches = book(runtime)
    while True:
        try:
            pump(runtime, actor)
        except Exception:  # Redis or the chain away: the next round tries again
            log.exception("batch pump of %s", runtime.store.prefix)
        with _pumps_lock:
            try:
                idle = not batches.live() and not batches.settled()
            except Exception:
                idle = False
            if idle:
                _pumps.pop(id(runtime), None)
                return
        time.sleep(poll_s)
