"""``SectorStore``: the durable sector pool in Redis and the only writer of sector state.

Why fencing tokens: Celery may deliver one phase message twice, and a worker that stalls
(a long GC pause, a frozen VM) may wake after its lease ran out. Take this timeline::

    t=0   worker A claims PreCommit2 of f01000-7 → token 41, lease until t=60
    t=70  A is frozen; its lease expires
    t=71  worker B claims the same phase → token 42
    t=90  A wakes and calls complete(token 41)   → refused: StaleToken
    t=95  B calls complete(token 42)             → accepted

Every claim issues a token from one counter, and every renew, complete or fail must present
the token that owns the lease, so the late worker can never overwrite the live one's result.
A second delivery of the same message finds the phase already running (or done) and its
claim returns None: the phase never runs twice at once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import redis
from pydantic_core import to_json

from sealpool.errors import (
    ChangedMeanwhile,
    DealTaken,
    IllegalTransition,
    NotLeader,
    NumbersExhausted,
    SectorNotFound,
    StaleToken,
)
from sealpool.store import history as histories
from sealpool.store import scripts
from sealpool.store.bulk import read_hashes, read_strings
from sealpool.store.history import HistoryEntry, HistoryPolicy
from sealpool.store.keys import KINDS, PoolKeys
from sealpool.store.model import Sector, SectorKind, encode_fields, parse_sector_id, record_dict
from sealpool.store.states import (
    TERMINAL,
    PhaseStatus,
    SectorState,
    allowed_sources,
    next_state,
    status_on_entry,
)

log = logging.getLogger(__name__)
DEFAULT_PRIORITY: dict[str, int] = {"deal": 2, "cc": 5}
_READ_BATCH = 2000
_FIRST_INDEX_KEY = 7  # state indexes follow the six common keys of a state-changing script
UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered, not yet acknowledged


@dataclass(frozen=True)
class Lease:
    """Proof that one worker owns one phase of one sector until ``expires_ms``."""

    sector_id: str
    phase: SectorState
    worker: str
    token: int
    expires_ms: int


@dataclass(frozen=True)
class Claim(Lease):
    """A lease just won, with the sector record as the claim left it (the phase's input)."""

    sector: Sector


class SectorStore:
    """The sector pool: create, read, claim and move sectors, atomically and with history."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "sealpool",
        lease_s: float = 60.0,
        request_id_ttl_s: int = 7 * 24 * 3600,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        history: HistoryPolicy | None = None,
    ) -> None:
        """``wait_replicas``: replicas that must have a claim, a renewal, a lease's end, a
        move or a new sector before it returns (WAIT, up to ``wait_timeout_ms``); 0: none.
        ``history``: what becomes of a sector's history stream once it is Proving or
        Aborted."""
        self.client = client
        self.prefix = prefix
        self.keys = PoolKeys(prefix)
        self.lease_s = lease_s
        self.request_id_ttl_s = request_id_ttl_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.history_policy = history or HistoryPolicy()
        self._create = client.register_script(scripts.CREATE)
        self._numbers = client.register_script(scripts.NUMBERS)
        self._start = client.register_script(scripts.START)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._finish_lua = client.register_script(scripts.FINISH)
        self._take_over = client.register_script(scripts.TAKE_OVER)
        self._move = client.register_script(scripts.MOVE)
        self._sent = client.register_script(scripts.SENT)
        self._reissue = client.register_script(scripts.REISSUE)
        self._held = client.register_script(scripts.HELD)
        self._prioritize = client.register_script(scripts.PRIORITIZE)
        self._in_broker = client.register_script(scripts.IN_BROKER)

    # -- creating -----------------------------------------------------------------------

    def create(
        self,
        miner: str,
        kind: SectorKind,
        *,
        deal_ids: Iterable[int] = (),
        priority: int | None = None,
        request_id: str | None = None,
        actor: str = "sealpool",
        leader: str | None = None,
        numbers: tuple[int, int | None] = (1, None),
    ) -> Sector:
        """Create one Pending sector; a repeated ``request_id`` returns the first one."""
        return self.create_many(
            miner,
            kind,
            1,
            deal_ids=deal_ids,
            priority=priority,
            request_id=request_id,
            actor=actor,
            leader=leader,
            numbers=numbers,
        )[0]

    def create_many(
        self,
        miner: str,
        kind: SectorKind,
        count: int,
        *,
        deal_ids: Iterable[int] = (),
        priority: int | None = None,
        request_id: str | None = None,
        actor: str = "sealpool",
        leader: str | None = None,
        numbers: tuple[int, int | None] = (1, None),
    ) -> list[Sector]:
        """Create ``count`` Pending sectors, idempotent per ``request_id``.

        Their sector numbers are new to the pool, at least ``numbers[0]`` (the floor) and
        at most ``numbers[1]`` (None: no limit); NumbersExhausted when none are left.

        The i-th sector is deduplicated under ``<request_id>/<i>``, so retrying the same
        request after a lost reply creates nothing new and returns the same sectors. Deals
        go into the (single) sector in the same atomic step that takes them off the waiting
        list: DealTaken when one of them is no longer waiting. With ``leader`` (the leading
        supervisor's ``"<token> <name>"``) nothing is created unless it still leads.
        """
        parse_sector_id(f"{miner}-0")
        if kind not in KINDS:
            raise ValueError(f"unknown sector kind {kind!r}; expected deal or cc")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        deals = sorted(set(deal_ids))
        if deals and count != 1:
            raise ValueError("deals go into one sector at a time")
        request_id = request_id or uuid.uuid4().hex
        priority = DEFAULT_PRIORITY[kind] if priority is None else priority
        first = self.take_numbers(miner, count, *numbers)
        pipe = self.client.pipeline(transaction=False)
        for index in range(count):
            sector_id = f"{miner}-{first + index}"
            request = {
                "id": sector_id, "miner": miner, "number": str(first + index), "kind": kind,
                "priority": priority, "actor": actor, "ttl_s": self.request_id_ttl_s,
                "deal_ids": [str(deal) for deal in deals], "deals": json.dumps(deals),
                "leader": leader,
            }  # fmt: skip
            self._create(
                keys=[
                    self.keys.sector(sector_id),
                    self.keys.history(sector_id),
                    self.keys.request(f"{request_id}/{index}"),
                    self.keys.index(SectorState.PENDING, kind),
                    self.keys.deals_waiting,
                    self.keys.deal_sectors,
                    self.keys.leader,
                    self.keys.listing(sector_id),
                ],
                args=[_request(request)],
                client=pipe,
            )
        if self.wait_replicas:
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
        replies = pipe.execute()
        if self.wait_replicas:
            self._check_acked(replies.pop())
        ids = []
        for outcome, detail in replies:
            if not outcome:
                raise (NotLeader if detail == "not the leader" else DealTaken)(
                    f"no sector created: {detail}"
                )
            ids.append(detail)
        return self.get_many(ids)

    # -- reading ------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The Redis server's clock (ms): the one clock every stored time comes from."""
        seconds, micros = self.client.time()
        return seconds * 1000 + micros // 1000

    def take_numbers(self, miner: str, count: int, floor: int, last: int | None) -> int:
        """The first of ``count`` consecutive sector numbers of ``miner``, taken atomically:
        never given before, at least ``floor``, at most ``last``."""
        taken, first = self._numbers(
            keys=[self.keys.sequence(miner)], args=[count, max(floor, 1), last or 0]
        )
        if not taken:
            raise NumbersExhausted(
                f"miner {miner}: sector numbers up to {last} are used up ({count} asked from "
                f"{int(first)} on): raise its last_number"
            )
        return int(first)

    def last_number(self, miner: str) -> int:
        """The highest sector number given to ``miner`` so far (0 before the first)."""
        return int(self.client.get(self.keys.sequence(miner)) or 0)

    def get(self, sector_id: str) -> Sector:
        """The sector with ``sector_id``; SectorNotFound if there is none."""
        fields = self.client.hgetall(self.keys.sector(sector_id))
        if not fields:
            raise SectorNotFound(f"no sector {sector_id!r} in pool {self.prefix!r}")
        return Sector.from_hash(fields)

    def get_many(self, sector_ids: Iterable[str]) -> list[Sector]:
        """The sectors with these ids, in order; ids that vanished meanwhile are skipped."""
        ids = list(sector_ids)
        sectors: list[Sector] = []
        for start in range(0, len(ids), _READ_BATCH):
            pipe = self.client.pipeline(transaction=False)
            for sector_id in ids[start : start + _READ_BATCH]:
                pipe.hgetall(self.keys.sector(sector_id))
            sectors.extend(Sector.from_hash(fields) for fields in pipe.execute() if fields)
        return sectors

    def ids_in_state(
        self, state: SectorState, kind: SectorKind | None = None, limit: int | None = None
    ) -> list[str]:
        """Ids in ``state`` from its index, most urgent (priority, then oldest) first."""
        indexes = [self.keys.index(state, each) for each in (KINDS if kind is None else (kind,))]
        stop = -1 if limit is None else limit - 1
        if len(indexes) > 1:  # only the kinds present need merging by score
            pipe = self.client.pipeline(transaction=False)
            for index in indexes:
                pipe.exists(index)
            indexes = [index for index, found in zip(indexes, pipe.execute(), strict=True) if found]
        if len(indexes) <= 1:  # one index is in order already: no scores to read (~6x less)
            return self.client.zrange(indexes[0], 0, stop) if indexes else []
        pipe = self.client.pipeline(transaction=False)
        for index in indexes:
            pipe.zrange(index, 0, stop, withscores=True)
        merged = sorted(chain.from_iterable(pipe.execute()), key=itemgetter(1))
        ids = [sector_id for sector_id, _score in merged]
        return ids if limit is None else ids[:limit]

    def list(
        self,
        state: SectorState | None = None,
        kind: SectorKind | None = None,
        limit: int | None = None,
    ) -> list[Sector]:
        """Sectors in ``state`` (every state when None), read through the state indexes."""
        return self.get_many(self._listed_ids(state, kind, limit))

    def listing(
        self,
        state: SectorState | None = None,
        kind: SectorKind | None = None,
        limit: int | None = None,
        miner: str | None = None,
        chunk: int = _READ_BATCH,
    ) -> Iterator[list[bytes]]:
        """The JSON of each sector :meth:`list` gives (``model_dump(mode="json")``; with
        ``miner``, its sectors only), ``chunk`` at a time, as stored bytes: the JSON the
        scripts keep for a live sector, built from the hash (unvalidated) for a final one."""
        ids = self._listed_ids(state, kind, limit, miner)
        head = self.keys.listing("")
        keys = [head + sector_id for sector_id in ids]
        for start, ready in zip(
            range(0, len(ids), chunk), read_strings(self.client, keys, chunk), strict=True
        ):
            missing = [ids[start + at] for at, raw in enumerate(ready) if raw is None]
            if missing:
                built = iter(self._built_json(missing))
                ready = [next(built) if raw is None else raw for raw in ready]
            yield [raw for raw in ready if raw is not None]

    def _built_json(self, sector_ids: list[str]) -> list[bytes | None]:
        """The JSON of these records built from their hashes (None for a record gone)."""
        keys = [self.keys.indexed_sector(sector_id) for sector_id in sector_ids]
        hashes = next(read_hashes(self.client, keys, len(keys)))
        return [to_json(record_dict(fields)) if fields else None for fields in hashes]

    def _listed_ids(
        self,
        state: SectorState | None,
        kind: SectorKind | None,
        limit: int | None,
        miner: str | None = None,
    ) -> list[str]:
        states = tuple(SectorState) if state is None else (state,)
        ids: list[str] = []
        for each in states:
            if limit is not None and len(ids) >= limit:
                break
            if miner is None:
                ids += self.ids_in_state(each, kind, None if limit is None else limit - len(ids))
            else:  # an id names its miner: filtered without reading a record
                ids += [i for i in self.ids_in_state(each, kind) if i.startswith(f"{miner}-")]
        return ids if limit is None else ids[:limit]

    def counts(self) -> dict[SectorState, dict[str, int]]:
        """How many sectors each state holds, per kind, from the index sizes alone."""
        pairs = [(state, kind) for state in SectorState for kind in KINDS]
        pipe = self.client.pipeline(transaction=False)
        for state, kind in pairs:
            pipe.zcard(self.keys.index(state, kind))
        counts: dict[SectorState, dict[str, int]] = {state: {} for state in SectorState}
        for (state, kind), count in zip(pairs, pipe.execute(), strict=True):
            counts[state][kind] = count
        return counts

    def history(self, sector_id: str) -> list[HistoryEntry]:
        """Every recorded event of the sector, oldest first: from the archive once its
        history was compacted, or, when the archive no longer holds it, a summary of each
        phase's last completed run."""
        sector = self.get(sector_id)
        live = histories.from_stream(self.client.xrange(self.keys.history(sector_id)))
        archived = (self.client.hget(self.keys.sector(sector_id), "archived") or "").split()
        if not archived:
            return live
        pipe = self.client.pipeline(transaction=False)
        for entry_id in archived:
            pipe.xrange(self.keys.history_archive, entry_id, entry_id)
        found = [reply[0][1] for reply in pipe.execute() if reply]
        if len(found) < len(archived):
            return histories.from_runs(sector.created_ms, sector.runs) + live
        return [entry for fields in found for entry in histories.from_archive(fields)] + live

    def near_deadline(self, before_epoch: int) -> list[str]:
        """Ids of live sectors whose earliest deadline falls at or before ``before_epoch``."""
        return self.client.zrangebyscore(self.keys.deadlines, "-inf", before_epoch)

    def expired_leases(self) -> list[str]:
        """Ids of sectors whose running phase lost its lease (worker dead or hung)."""
        return self.client.zrangebyscore(self.keys.leases, "-inf", self.now_ms())

    # -- leases -------------------------------------------------------------------------

    def claim(
        self,
        sector_id: str,
        phase: SectorState,
        worker: str,
        lease_s: float | None = None,
        host: str | None = None,
        message: str | None = None,
    ) -> Claim | None:
        """Take the lease on the queued ``phase`` of the sector, or None when it can't be had.

        ``message`` is the id of the message that asked for the phase: a message the store
        has since replaced (re-sent, re-prioritised) claims nothing. Each success returns a
        new, larger fencing token. With ``host`` (phases that touch temp files) an unbound
        sector is bound to that host, and a sector bound to another host is refused.
        """
        request = {
            "phase": phase.value,
            "worker": worker,
            "lease_ms": int(1000 * (lease_s or self.lease_s)),
            "host": host or "",
            "msg": message or "",
        }
        token, expires, *record = self._replicated(
            self._claim,
            [*self._common_keys(sector_id), self.keys.fence, self.keys.listing(sector_id)],
            [_request(request)],
        )
        if not token:
            return None
        return Claim(sector_id, phase, worker, int(token), int(expires), _sector(record[0]))

    def renew(
        self,
        lease: Lease,
        lease_s: float | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> Lease:
        """Extend the lease, saving ``updates`` with it (progress such as a sent message).

        StaleToken when another claim (or a move) has ended the lease, or it has expired.
        """
        lease_ms = int(1000 * (lease_s or self.lease_s))
        keys = [
            self.keys.sector(lease.sector_id),
            self.keys.leases,
            self.keys.listing(lease.sector_id),
        ]
        args = [lease.token, lease_ms, json.dumps(encode_fields(dict(updates or {})))]
        expires = self._replicated(self._renew, keys, args)
        if isinstance(expires, list):
            raise StaleToken(f"{lease.sector_id}: token {lease.token}: {expires[1]}")
        return Lease(lease.sector_id, lease.phase, lease.worker, lease.token, int(expires))

    def complete(
        self,
        lease: Lease,
        updates: Mapping[str, Any] | None = None,
        detail: str = "",
        delay_s: float = 0.0,
    ) -> Sector:
        """Finish the leased phase: the sector moves on to the next state, queued there
        (its message due in ``delay_s``). Returns the record as the move left it."""
        return self._finish(
            lease,
            next_state(lease.phase),
            event="complete",
            detail=detail,
            updates={"last_error": None, **(updates or {})},
            delay_s=delay_s,
        )

    def fail(self, lease: Lease, error: str, *, retry: bool, delay_s: float = 0.0) -> Sector:
        """Record a failed attempt: queue the phase again (due in ``delay_s``) when
        ``retry``, else move to Failed. Returns the record as the move left it."""
        return self._finish(
            lease,
            lease.phase if retry else SectorState.FAILED,
            event="retry" if retry else "fail",
            detail=error,
            updates={"last_error": error, "failed_phase": None if retry else lease.phase.value},
            delay_s=delay_s,
        )

    def release(self, lease: Lease, reason: str = "handed back", delay_s: float = 0.0) -> Sector:
        """Give the phase back unfinished (worker shutting down, or a sector parked in a
        batch): it is queued again, its message due in ``delay_s``. Returns the record as
        the move left it."""
        return self._finish(lease, lease.phase, event="release", detail=reason, delay_s=delay_s)

    def take_over(
        self,
        sector: Sector,
        target: SectorState,
        *,
        actor: str,
        detail: str,
        updates: Mapping[str, Any] | None = None,
    ) -> Sector | None:
        """Move a sector whose running phase's lease expired (its worker died or hung);
        the record as the move left it.

        Fenced by the expired lease's token and checked for expiry inside the script: None
        when the worker renewed meanwhile, or someone else took the sector over first.
        """
        if sector.lease_token is None or sector.status is not PhaseStatus.RUNNING:
            return None
        request = self._move_request(
            {sector.state}, target, actor, "take-over", detail, updates, record=True
        )
        request["token"] = str(sector.lease_token)
        outcome = self._transition(self._take_over, sector.id, request)
        return None if outcome is None else _sector(outcome)

    # -- moves by the supervisor and operators -------------------------------------------

    def start(
        self, sector_id: str, *, actor: str, leader: str | None = None, host: str | None = None
    ) -> Sector:
        """Move a Pending sector into AddPiece, queued: the one way into the pipeline; with
        ``host``, bound to that host (its AddPiece sent there).

        IllegalTransition when it was started already; with ``leader`` (the leading
        supervisor's ``"<token> <name>"``), NotLeader once the caller no longer leads.
        """
        updates = {"host": host} if host else None
        request = self._move_request(
            {SectorState.PENDING}, SectorState.ADD_PIECE, actor, "start", "", updates, record=True
        )
        request["leader"] = leader
        outcome = self._transition(
            self._start, sector_id, request, extra_keys=[self.keys.leader, self.keys.last_start]
        )
        assert outcome is not None
        return _sector(outcome)

    def move(
        self,
        sector_id: str,
        target: SectorState,
        *,
        actor: str,
        event: str = "move",
        detail: str = "",
        updates: Mapping[str, Any] | None = None,
        sources: Iterable[SectorState] | None = None,
        expected_version: int | None = None,
        delay_s: float = 0.0,
    ) -> Sector:
        """Move the sector to ``target`` from one of ``sources`` (by default every state the
        state machine allows it from); the record as the move left it.

        With ``expected_version`` the move happens only if the sector is still at that
        version (the caller decided on a record it read), else ChangedMeanwhile. A move to
        the state the sector is in needs it: without, it is refused as illegal.
        """
        allowed = allowed_sources(target) if sources is None else frozenset(sources)
        if expected_version is None:
            allowed = allowed - {target}
        request = self._move_request(
            allowed, target, actor, event, detail, updates, delay_s=delay_s, record=True
        )
        request["version"] = expected_version
        outcome = self._transition(self._move, sector_id, request)
        assert outcome is not None
        return _sector(outcome)

    def prioritize(self, sector_id: str, priority: int, actor: str, reason: str) -> Sector | None:
        """Give the sector a new priority (0 = most urgent); the record, with a new message
        for a queued phase, or None if it had that priority already (one read: the
        supervisor asks again every tick for each sector near a deadline)."""
        state, kind, current = self.client.hmget(
            self.keys.sector(sector_id), ["state", "kind", "priority"]
        )
        if state is None:
            raise SectorNotFound(f"no sector {sector_id!r} in pool {self.prefix!r}")
        if current == str(priority):  # the script checks again: this only saves the call
            return None
        flat = self._prioritize(
            keys=[
                *self._common_keys(sector_id),
                self.keys.index(state, kind),
                self.keys.listing(sector_id),
            ],
            args=[priority, actor, reason],
        )
        return _sector(flat) if flat else None

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the pool's counters (re-tickets, take-overs, …)."""
        self.client.hincrby(self.keys.counters, name, amount)

    def counters(self) -> dict[str, int]:
        """The pool's counters."""
        return {k: int(v) for k, v in self.client.hgetall(self.keys.counters).items()}

    # -- messages -----------------------------------------------------------------------

    def message_sent(self, sector: Sector, detail: str) -> bool:
        """Record that the sector's current message went to the broker; False when the
        message was replaced meanwhile (the send was in vain, and harmless)."""
        return bool(
            self._sent(
                keys=[*self._common_keys(sector.id), self.keys.listing(sector.id)],
                args=[sector.msg_id or "", sector.state.value, detail],
            )
        )

    def message_held(self, sector_id: str, message: str, holder: str) -> bool:
        """Record that ``holder`` (``<host>|<phase>``) took ``message`` to run it when its
        countdown ends; False when the message is no longer the sector's."""
        keys = [self.keys.sector(sector_id), self.keys.listing(sector_id)]
        return bool(self._held(keys=keys, args=[message, holder]))

    def reissue(self, sector_id: str, message: str, delay_s: float, why: str) -> Sector | None:
        """Replace ``message`` of a queued phase by a new one due in ``delay_s``; None when
        ``message`` is no longer the sector's (someone replaced or claimed it first)."""
        flat = self._reissue(
            keys=[*self._common_keys(sector_id), self.keys.listing(sector_id)],
            args=[message, int(delay_s * 1000), why],
        )
        return _sector(flat) if flat else None

    def outbox(self, due_before_ms: int) -> list[str]:
        """Ids of queued phases whose message is still to be sent, due before the time."""
        return self.client.zrangebyscore(self.keys.outbox, "-inf", due_before_ms)

    def unclaimed(self, due_before_ms: int) -> list[str]:
        """Ids of queued phases whose message was sent, due before the time, and is not
        claimed yet (it waits in a queue, or the broker lost it)."""
        return self.client.zrangebyscore(self.keys.unclaimed, "-inf", due_before_ms)

    def recheck_unclaimed(self, sector_ids: Iterable[str], at_ms: int) -> None:
        """Look at these unclaimed messages again from ``at_ms`` (they wait in a queue)."""
        mapping = {sector_id: at_ms for sector_id in sector_ids}
        if mapping:
            self.client.zadd(self.keys.unclaimed, mapping, xx=True)

    def in_broker(
        self, message_ids: Iterable[str], queue_lists: Iterable[str]
    ) -> tuple[set[str], set[str]]:
        """Which message ids the broker holds: (waiting in these queue lists, delivered to
        a worker and not yet acknowledged — a countdown in its timer, or a worker that died
        before running it)."""
        ids = list(message_ids)
        if not ids:
            return set(), set()
        queued, delivered = self._in_broker(keys=[UNACKED_KEY, *queue_lists], args=ids)
        return set(queued), set(delivered)

    # -- internals ----------------------------------------------------------------------

    def _common_keys(self, sector_id: str) -> list[str]:
        keys = self.keys
        return [
            keys.sector(sector_id),
            keys.history(sector_id),
            keys.leases,
            keys.deadlines,
            keys.outbox,
            keys.unclaimed,
        ]

    def _finish(
        self,
        lease: Lease,
        target: SectorState,
        *,
        event: str,
        detail: str,
        updates: Mapping[str, Any] | None = None,
        delay_s: float = 0.0,
    ) -> Sector:
        request = self._move_request(
            {lease.phase}, target, lease.worker, event, detail, updates, delay_s, record=True
        )
        request.update(token=str(lease.token), phase=lease.phase.value, run=event == "complete")
        outcome = self._transition(self._finish_lua, lease.sector_id, request)
        if outcome is None:
            raise StaleToken(
                f"{lease.sector_id}: token {lease.token} no longer holds {lease.phase}"
            )
        return _sector(outcome)

    def _move_request(
        self,
        sources: Iterable[SectorState],
        target: SectorState,
        actor: str,
        event: str,
        detail: str,
        updates: Mapping[str, Any] | None,
        delay_s: float = 0.0,
        *,
        record: bool = False,
    ) -> dict[str, Any]:
        status = status_on_entry(target)
        return {
            "sources": sorted(state.value for state in sources),
            "target": target.value,
            "status": status.value if status else "",
            "terminal": target in TERMINAL,
            "actor": actor,
            "event": event,
            "detail": detail,
            "fields": encode_fields(dict(updates or {})),
            "delay_ms": max(0, int(delay_s * 1000)),
            "record": record,
            **self.history_policy.request(target),
        }

    def _transition(
        self,
        script: Any,
        sector_id: str,
        request: dict[str, Any],
        extra_keys: Iterable[str] = (),
    ) -> list[str] | None:
        """Run a state-changing script; the record it left, or None for a stale token."""
        states = [SectorState(name) for name in request["sources"]] + [
            SectorState(request["target"])
        ]
        index_keys, request["index"] = self._index_keys(states)
        keys = [*self._common_keys(sector_id), *index_keys]
        if request.get("compact") == "archive":
            keys.append(self.keys.history_archive)
            request["archive"] = len(keys)
        keys += [*extra_keys, self.keys.listing(sector_id)]
        moved, reason, current = self._replicated(script, keys, [_request(request)])
        if moved:
            return current
        if reason == "stale token":
            return None
        if reason == "no such sector":
            raise SectorNotFound(f"no sector {sector_id!r} in pool {self.prefix!r}")
        if reason == "changed meanwhile":
            raise ChangedMeanwhile(f"{sector_id}: changed since it was read; not moved")
        if reason == "not the leader":
            raise NotLeader(f"{sector_id}: not moved: the caller no longer leads")
        raise IllegalTransition(f"{sector_id}: illegal transition {current} → {request['target']}")

    def _replicated(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """``script``'s reply once ``wait_replicas`` replicas have its writes (WAIT counts
        the writes of its own connection, hence the pipeline)."""
        if not self.wait_replicas:
            return script(keys, args)
        with self.client.pipeline(transaction=False) as pipe:
            script(keys, args, client=pipe)
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            reply, acked = pipe.execute()
        self._check_acked(acked)
        return reply

    def _check_acked(self, acked: int) -> None:
        if acked < self.wait_replicas:
            log.warning(
                "%d of %d replicas acknowledged a write within %d ms; it stands on the "
                "primary alone until they catch up",
                acked,
                self.wait_replicas,
                self.wait_timeout_ms,
            )

    def _index_keys(self, states: Iterable[SectorState]) -> tuple[list[str], dict[str, int]]:
        """The index keys of ``states`` for every kind, and where each sits in KEYS."""
        keys: list[str] = []
        positions: dict[str, int] = {}
        for state in dict.fromkeys(states):
            for kind in KINDS:
                positions[f"{state.value}:{kind}"] = _FIRST_INDEX_KEY + len(keys)
                keys.append(self.keys.index(state, kind))
        return keys, positions


def _sector(flat: list[str]) -> Sector:
    """The record from a script's HGETALL reply (a flat field, value list)."""
    return Sector.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _request(fields: Mapping[str, Any]) -> str:
    """A script's JSON request, without the fields left unset (Lua would see cjson.null)."""
    return json.dumps({name: value for name, value in fields.items() if value is not None})


__all__ = ["KINDS", "Claim", "HistoryEntry", "Lease", "PhaseStatus", "SectorStore"]
