"""Batches of precommits and prove-commits: one message for many sectors, as lotus sends them.

A sector's PreCommitting (or Committing) phase *enrolls* it: its SectorPreCommitInfo (or its
activation and proof), the value it needs and its cut-off epoch go into the open batch of its
miner, and the phase ends without holding a slot. :meth:`BatchBook.pump` (the supervisor's
tick, and a thread of the worker that enrolled) does the rest, under one Redis lock:

- cut an open batch when it is full, when its wait ran out, or when the earliest member's
  cut-off minus the slack is reached (cut-offs: ticket expiry for a precommit, the
  prove-commit deadline for a prove-commit) — lotus' rules — or, knowing the pool
  (:class:`Pool`), when no sector on its way could join it before then: a batch does not
  wait out its timer for sectors that don't exist;
- drop the members that are no longer fit to send (their sector aborted, removed or moved
  on, or re-ticketed since it enrolled): their sectors enroll anew if they come back;
- check its value against the available balance: short, it *waits* (the reason says how
  much is needed and how much there is) and is checked again at every pump;
- record its MsgUuid, then push, then record the CID: a pump that crashed in between pushes
  the same MsgUuid again, which the node answers with the message it sent;
- after ``message_confidence`` epochs on the receipt: landed (each member gets the receipt),
  or failed: a batch of several members is split in halves sent again, a lone member fails.

Lotus' settings (node/config/def.go): MaxPreCommitBatch 256, PreCommitBatchWait 24 h,
PreCommitBatchSlack 3 h, MinCommitBatch 4, MaxCommitBatch 819, CommitBatchWait 24 h,
CommitBatchSlack 1 h. A prove-commit of ``min_commit_batch`` (at least 4) or more sectors
carries one SnarkPackV2 aggregate proof, fewer sectors their own proofs.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import redis
from multiformats import CID

from sealpool.chain.base import Chain
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    PROVE_COMMIT_SECTORS3,
    Activation,
    Piece,
    PreCommit,
    encode_precommits,
    encode_prove_commits,
)
from sealpool.config import EPOCH_SECONDS, Settings
from sealpool.errors import ChainError, PhaseError

Kind = Literal["precommit", "commit"]
METHODS: dict[str, int] = {"precommit": PRE_COMMIT_SECTOR_BATCH2, "commit": PROVE_COMMIT_SECTORS3}
MIN_AGGREGATE, MAX_AGGREGATE = 4, 819  # SnarkPackV2 (builtin-actors policy)
PROOFS_PER_MESSAGE = 30  # 1920-byte proofs under lotus' 64 KiB message cap
RETRYABLE_EXIT_CODES = frozenset({6, 7, 19})  # funds or gas: the same batch may pass later
LIVE_STATES = ("open", "waiting", "sending", "sent")
ATTO = 10**18
Aggregator = Callable[[str, list[Activation]], bytes]  # miner, activations → aggregate proof


@dataclass
class Batch:
    """One message's worth of sectors, and where it stands."""

    id: str
    kind: Kind
    miner: str
    opened: int  # epoch of its first member
    members: list[str] = field(default_factory=list)
    cutoff: int | None = None  # earliest member cut-off
    state: str = "open"  # open, waiting (funds), sending, sent, landed, failed, dropped
    value: int = 0
    uuid: str | None = None
    cid: str | None = None
    height: int | None = None
    exit_code: int | None = None
    cut: str = ""  # why it was cut
    reason: str = ""  # where it stands


@dataclass
class Member:
    """A sector enrolled in a batch: its message entry, value, cut-off and outcome."""

    sector_id: str
    kind: Kind
    miner: str
    entry: dict[str, Any]
    value: int
    cutoff: int
    batch: str = ""
    outcome: str = ""  # "", landed, failed
    cid: str | None = None
    height: int | None = None
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Rules:
    """When a batch of one kind is cut: full, its wait over, its earliest cut-off near."""

    max_size: int
    wait_epochs: float
    slack_epochs: float

    @classmethod
    def of(cls, kind: Kind, settings: Settings, aggregates: bool) -> Rules:
        if kind == "precommit":
            size, wait, slack = (
                settings.max_precommit_batch,
                settings.precommit_batch_wait_s,
                settings.precommit_batch_slack_s,
            )
        else:
            size, wait, slack = (
                settings.max_commit_batch if aggregates else PROOFS_PER_MESSAGE,
                settings.commit_batch_wait_s,
                settings.commit_batch_slack_s,
            )
        return cls(size, wait / EPOCH_SECONDS, slack / EPOCH_SECONDS)

    def due(self, batch: Batch, head: int) -> str | None:
        """Why ``batch`` is cut at ``head``; None while it may wait."""
        if len(batch.members) >= self.max_size:
            return f"full ({len(batch.members)})"
        if head >= batch.opened + self.wait_epochs:
            return "wait over"
        if batch.cutoff is not None and head >= batch.cutoff - self.slack_epochs:
            return f"cut-off {batch.cutoff} near"
        return None

    def idle(self, batch: Batch, head: int, arrival_s: float | None) -> str | None:
        """Why ``batch`` is cut when the next sector could join it ``arrival_s`` farm
        seconds from now at the soonest (None: none is on its way); None while one could
        join before its wait or its cut-off's slack runs out."""
        if arrival_s is None:
            return "nothing on its way"
        last = batch.opened + self.wait_epochs
        if batch.cutoff is not None:
            last = min(last, batch.cutoff - self.slack_epochs)
        if head + arrival_s / EPOCH_SECONDS >= last:
            return f"nothing on its way before epoch {last:.0f}"
        return None


class Pool(Protocol):
    """What the batches know of the pool around them (see
    :class:`sealpool.sealing_tasks.batched.PoolView`)."""

    def arrival_s(self, kind: Kind, enrolled: int) -> float | None:
        """Farm seconds until another sector could enroll in a batch of ``kind`` at the
        soonest, ``enrolled`` sectors being in live batches of that kind already; None when
        no sector is on its way."""
        ...

    def stale(self, members: list[Member]) -> dict[str, str]:
        """The members no longer fit to send, with why: sector id → reason."""
        ...


def fil(atto: int) -> str:
    """attoFIL as FIL, to the nanoFIL: ``1.2 FIL``."""
    return f"{atto / ATTO:.9f}".rstrip("0").rstrip(".") + " FIL"


class BatchBook:
    """The pool's batches in Redis: enrollments, cuts, sends and outcomes."""

    def __init__(self, client: redis.Redis, prefix: str, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.key = f"{prefix}:batches"

    # -- reading ----------------------------------------------------------------------

    def batch(self, batch_id: str) -> Batch | None:
        raw = self.client.hget(self.key, batch_id)
        return Batch(**json.loads(raw)) if raw else None

    def batches(self, limit: int = 100) -> list[Batch]:
        """The newest ``limit`` batches, newest first."""
        ids = self.client.zrevrange(f"{self.key}:order", 0, limit - 1)
        raws = self.client.hmget(self.key, ids) if ids else []
        return [Batch(**json.loads(raw)) for raw in raws if raw]

    def member(self, sector_id: str) -> Member | None:
        raw = self.client.hget(f"{self.key}:members", sector_id)
        return Member(**json.loads(raw)) if raw else None

    def live(self) -> bool:
        """Whether a batch is open, waiting, or on its way."""
        return bool(self.client.scard(f"{self.key}:live"))

    # -- writing (under the lock) -----------------------------------------------------

    def enroll(self, member: Member, head: int) -> Member:
        """Put ``member`` in its miner's open batch of its kind (a new one if none);
        enrolled already, the member as it stands."""
        with self.client.lock(f"{self.key}:lock", timeout=60, blocking_timeout=30):
            if known := self.member(member.sector_id):
                return known
            open_key = f"{member.kind}:{member.miner}"
            open_id = self.client.hget(f"{self.key}:open", open_key)
            batch = self.batch(open_id) if open_id else None
            if batch is None or batch.state != "open":
                batch = self._new(member.kind, member.miner, head)
                self.client.hset(f"{self.key}:open", open_key, batch.id)
            batch.members.append(member.sector_id)
            batch.cutoff = min(member.cutoff, batch.cutoff or member.cutoff)
            member = replace(member, batch=batch.id)
            self._save(batch, member)
            return member

    def forget(self, sector_id: str) -> None:
        """Drop a member whose outcome its sector has taken."""
        self.client.hdel(f"{self.key}:members", sector_id)

    def settled(self) -> list[Member]:
        """Members whose batch landed or failed, their sectors not yet moved on."""
        raws = self.client.hvals(f"{self.key}:members")
        return [m for m in (Member(**json.loads(raw)) for raw in raws) if m.outcome]

    def pump(
        self,
        chain_for: Callable[[str], Chain],
        aggregator: Aggregator | None,
        pool: Pool | None = None,
    ) -> bool:
        """Cut, fund, send and watch every live batch once; False when another process
        holds the lock (it pumps). Without ``pool``, lotus' rules alone cut batches and no
        member is dropped."""
        lock = self.client.lock(f"{self.key}:lock", timeout=60)
        if not lock.acquire(blocking=False):
            return False
        try:
            ids = sorted(self.client.smembers(f"{self.key}:live"))
            live = [b for b in (self.batch(i) for i in ids) if b is not None]
            enrolled = {
                kind: sum(len(b.members) for b in live if b.kind == kind) for kind in METHODS
            }
            for batch in live:
                self._advance(batch, chain_for(batch.miner), aggregator, pool, enrolled)
        finally:
            with contextlib.suppress(redis.exceptions.LockError):  # expired: a later pump goes on
                lock.release()
        return True

    # -- internals --------------------------------------------------------------------

    def _new(self, kind: Kind, miner: str, head: int, members: list[str] | None = None) -> Batch:
        number = self.client.incr(f"{self.key}:seq")
        batch = Batch(id=f"{kind[:2]}{number}", kind=kind, miner=miner, opened=head)
        self.client.zadd(f"{self.key}:order", {batch.id: number})
        self.client.sadd(f"{self.key}:live", batch.id)
        batch.members = list(members or [])
        return batch

    def _save(self, batch: Batch, *members: Member) -> None:
        pipe = self.client.pipeline()
        pipe.hset(self.key, batch.id, json.dumps(asdict(batch)))
        if batch.state not in LIVE_STATES:
            pipe.srem(f"{self.key}:live", batch.id)
        for member in members:
            pipe.hset(f"{self.key}:members", member.sector_id, json.dumps(asdict(member)))
        pipe.execute()

    def _members(self, batch: Batch) -> list[Member]:
        raws = self.client.hmget(f"{self.key}:members", batch.members) if batch.members else []
        return [Member(**json.loads(raw)) for raw in raws if raw]

    def _advance(
        self,
        batch: Batch,
        chain: Chain,
        aggregator: Aggregator | None,
        pool: Pool | None,
        enrolled: dict[str, int],
    ) -> None:
        head = chain.head()
        members = self._members(batch)
        aggregates = aggregator is not None and batch.kind == "commit"
        if batch.state == "open":
            rules = Rules.of(batch.kind, self.settings, aggregates)
            why = rules.due(batch, head)
            if why is None and pool is not None:
                why = rules.idle(batch, head, pool.arrival_s(batch.kind, enrolled[batch.kind]))
            if why is None:
                return
            self.client.hdel(f"{self.key}:open", f"{batch.kind}:{batch.miner}")
            batch.state, batch.cut = "waiting", why
        if batch.state == "waiting":
            if pool is not None and (stale := pool.stale(members)):
                members = self._drop(batch, members, stale)
                if not members:
                    return
            batch.value = sum(m.value for m in members)
            available = chain.available_balance()
            if batch.value > available:
                batch.reason = f"waiting for funds: need {fil(batch.value)}, have {fil(available)}"
                self._save(batch)
                return
            batch.state, batch.uuid = "sending", str(uuid.uuid4())
            self._save(batch)  # the intent, before the push
        if batch.state == "sending":
            assert batch.uuid is not None
            try:
                method, params = self._message(batch, members, aggregator)
                fee = self.settings.max_message_fee
                batch.cid = chain.push(method, params, batch.value, batch.uuid, fee)
            except (ChainError, PhaseError) as exc:
                batch.reason = f"push failed, trying again: {exc}"
                self._save(batch)
                return
            batch.state, batch.reason = "sent", f"method {method}, {len(members)} sectors"
            self._save(batch)
        if batch.state == "sent":
            assert batch.cid is not None
            receipt = chain.search(batch.cid)
            if receipt is None or head < receipt.height + self.settings.message_confidence:
                return
            batch.cid, batch.height = receipt.cid, receipt.height
            batch.exit_code = receipt.exit_code
            if receipt.exit_code == 0:
                batch.state = "landed"
                self._settle(batch, members, "landed", "")
            elif len(members) > 1:
                self._split(batch, members, head)
            else:
                why = f"message {receipt.cid} failed on chain: exit code {receipt.exit_code}"
                batch.state, batch.reason = "failed", why
                self._settle(batch, members, "failed", why)

    def _settle(self, batch: Batch, members: list[Member], outcome: str, why: str) -> None:
        settled = [
            replace(m, outcome=outcome, cid=batch.cid, height=batch.height,
                    exit_code=batch.exit_code, reason=why)
            for m in members
        ]  # fmt: skip
        self._save(batch, *settled)

    def _drop(self, batch: Batch, members: list[Member], stale: dict[str, str]) -> list[Member]:
        """Take the ``stale`` members out of ``batch`` (their records deleted: a sector
        that comes back enrolls anew); the members kept. A batch left empty is "dropped"."""
        kept = [m for m in members if m.sector_id not in stale]
        batch.members = [m.sector_id for m in kept]
        batch.cutoff = min((m.cutoff for m in kept), default=None)
        shown = "; ".join(f"{sector_id}: {why}" for sector_id, why in sorted(stale.items()))
        batch.cut = f"{batch.cut}; dropped {shown}"
        if not kept:
            batch.state = "dropped"
        self.client.hdel(f"{self.key}:members", *stale)
        self._save(batch)
        return kept

    def _split(self, batch: Batch, members: list[Member], head: int) -> None:
        """Send the failed batch's members again in two halves (new messages)."""
        half = len(members) // 2
        parts = []
        for part in (members[:half], members[half:]):
            child = self._new(batch.kind, batch.miner, head, [m.sector_id for m in part])
            child.cutoff = min(m.cutoff for m in part)
            child.value = sum(m.value for m in part)
            child.state, child.cut = "waiting", f"half of {batch.id}"
            self._save(child, *[replace(m, batch=child.id) for m in part])
            parts.append(child.id)
        batch.state = "failed"
        batch.reason = f"exit code {batch.exit_code}: split into {' and '.join(parts)}"
        self._save(batch)

    def _message(
        self, batch: Batch, members: list[Member], aggregator: Aggregator | None
    ) -> tuple[int, bytes]:
        entries = sorted((m.entry for m in members), key=lambda e: e["number"])
        if batch.kind == "precommit":
            return PRE_COMMIT_SECTOR_BATCH2, encode_precommits([precommit_of(e) for e in entries])
        activations = [activation_of(e) for e in entries]
        aggregate = None
        threshold = max(MIN_AGGREGATE, self.settings.min_commit_batch)
        if aggregator is not None and threshold <= len(activations) <= MAX_AGGREGATE:
            aggregate = aggregator(batch.miner, activations)
        return PROVE_COMMIT_SECTORS3, encode_prove_commits(activations, aggregate)


def precommit_entry(precommit: PreCommit) -> dict[str, Any]:
    """A SectorPreCommitInfo as JSON (CIDs as strings)."""
    entry = asdict(precommit)
    entry.update(comm_r=str(precommit.comm_r), deal_ids=list(precommit.deal_ids))
    entry["comm_d"] = str(precommit.comm_d) if precommit.comm_d else None
    return entry


def precommit_of(entry: dict[str, Any]) -> PreCommit:
    return PreCommit(
        seal_proof=entry["seal_proof"], number=entry["number"], comm_r=CID.decode(entry["comm_r"]),
        ticket_epoch=entry["ticket_epoch"], expiration=entry["expiration"],
        comm_d=CID.decode(entry["comm_d"]) if entry["comm_d"] else None,
        deal_ids=tuple(entry["deal_ids"]),
    )  # fmt: skip


def activation_entry(activation: Activation) -> dict[str, Any]:
    """A sector's activation and proof as JSON."""
    pieces = [[str(p.cid), p.size] for p in activation.pieces]
    return {"number": activation.number, "proof": activation.proof.hex(), "pieces": pieces}


def activation_of(entry: dict[str, Any]) -> Activation:
    pieces = tuple(Piece(cid=CID.decode(cid), size=size) for cid, size in entry["pieces"])
    return Activation(entry["number"], bytes.fromhex(entry["proof"]), pieces)
