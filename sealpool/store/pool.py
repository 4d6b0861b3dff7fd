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

import heapq
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from sealpool.errors import ChangedMeanwhile, IllegalTransition, SectorNotFound, StaleToken
from sealpool.store import scripts
from sealpool.store.model import Sector, SectorKind, encode_fields, parse_sector_id
from sealpool.store.states import (
    TERMINAL,
    PhaseStatus,
    SectorState,
    allowed_sources,
    next_state,
    status_on_entry,
)

KINDS: tuple[SectorKind, ...] = ("deal", "cc")
DEFAULT_PRIORITY: dict[str, int] = {"deal": 2, "cc": 5}
_READ_BATCH = 2000


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


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded event in a sector's life."""

    at_ms: int
    actor: str
    event: str
    from_state: str
    to_state: str
    detail: str


class SectorStore:
    """The sector pool: create, read, claim and move sectors, atomically and with history."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "sealpool",
        lease_s: float = 60.0,
        request_id_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_s = lease_s
        self.request_id_ttl_s = request_id_ttl_s
        self._create = client.register_script(scripts.CREATE)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._move = client.register_script(scripts.MOVE)
        self._prioritize = client.register_script(scripts.PRIORITIZE)

    # -- keys -------------------------------------------------------------------------

    def _sector_key(self, sector_id: str) -> str:
        parse_sector_id(sector_id)
        return f"{self.prefix}:sector:{sector_id}"

    def _history_key(self, sector_id: str) -> str:
        return f"{self.prefix}:history:{sector_id}"

    def _index_key(self, state: SectorState, kind: str) -> str:
        return f"{self.prefix}:state:{state.value}:{kind}"

    @property
    def _leases_key(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def _deadlines_key(self) -> str:
        return f"{self.prefix}:deadlines"

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
    ) -> Sector:
        """Create one Pending sector; a repeated ``request_id`` returns the first one."""
        return self.create_many(
            miner, kind, 1, deal_ids=deal_ids, priority=priority, request_id=request_id, actor=actor
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
    ) -> list[Sector]:
        """Create ``count`` Pending sectors in one round trip, idempotent per ``request_id``.

        The i-th sector is deduplicated under ``<request_id>/<i>``, so retrying the same
        request after a lost reply creates nothing new and returns the same sectors.
        """
        parse_sector_id(f"{miner}-0")
        if kind not in KINDS:
            raise ValueError(f"unknown sector kind {kind!r}; expected deal or cc")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        request_id = request_id or uuid.uuid4().hex
        priority = DEFAULT_PRIORITY[kind] if priority is None else priority
        extra = encode_fields({"deal_ids": list(deal_ids)})
        pipe = self.client.pipeline(transaction=False)
        for index in range(count):
            self._create(
                keys=[f"{self.prefix}:request:{request_id}/{index}", f"{self.prefix}:seq:{miner}"],
                args=[
                    self.prefix,
                    miner,
                    kind,
                    priority,
                    self.request_id_ttl_s,
                    actor,
                    SectorState.PENDING.value,
                    *_pairs(extra),
                ],
                client=pipe,
            )
        ids = [sector_id for sector_id, _created in pipe.execute()]
        return self.get_many(ids)

    # -- reading ------------------------------------------------------------------------

    def last_number(self, miner: str) -> int:
        """The highest sector number given to ``miner`` so far (0 before the first)."""
        return int(self.client.get(f"{self.prefix}:seq:{miner}") or 0)

    def get(self, sector_id: str) -> Sector:
        """The sector with ``sector_id``; SectorNotFound if there is none."""
        fields = self.client.hgetall(self._sector_key(sector_id))
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
                pipe.hgetall(self._sector_key(sector_id))
            sectors.extend(Sector.from_hash(fields) for fields in pipe.execute() if fields)
        return sectors

    def ids_in_state(
        self, state: SectorState, kind: SectorKind | None = None, limit: int | None = None
    ) -> list[str]:
        """Ids in ``state`` from its index, most urgent (priority, then oldest) first."""
        kinds = KINDS if kind is None else (kind,)
        stop = -1 if limit is None else limit - 1
        pipe = self.client.pipeline(transaction=False)
        for each in kinds:
            pipe.zrange(self._index_key(state, each), 0, stop, withscores=True)
        merged = heapq.merge(*pipe.execute(), key=lambda member: member[1])
        ids = [sector_id for sector_id, _score in merged]
        return ids if limit is None else ids[:limit]

    def list(
        self,
        state: SectorState | None = None,
        kind: SectorKind | None = None,
        limit: int | None = None,
    ) -> list[Sector]:
        """Sectors in ``state`` (every state when None), read through the state indexes."""
        states = tuple(SectorState) if state is None else (state,)
        ids: list[str] = []
        for each in states:
            remaining = None if limit is None else limit - len(ids)
            if remaining == 0:
                break
            ids.extend(self.ids_in_state(each, kind, remaining))
        return self.get_many(ids)

    def counts(self) -> dict[SectorState, dict[str, int]]:
        """How many sectors each state holds, per kind, from the index sizes alone."""
        pairs = [(state, kind) for state in SectorState for kind in KINDS]
        pipe = self.client.pipeline(transaction=False)
        for state, kind in pairs:
            pipe.zcard(self._index_key(state, kind))
        counts: dict[SectorState, dict[str, int]] = {state: {} for state in SectorState}
        for (state, kind), count in zip(pairs, pipe.execute(), strict=True):
            counts[state][kind] = count
        return counts

    def history(self, sector_id: str) -> list[HistoryEntry]:
        """Every recorded event of the sector, oldest first."""
        self.get(sector_id)
        return [
            HistoryEntry(int(f["at"]), f["actor"], f["event"], f["from"], f["to"], f["detail"])
            for _id, f in self.client.xrange(self._history_key(sector_id))
        ]

    def note(self, sector_id: str, state: SectorState, actor: str, event: str, detail: str) -> None:
        """Append an event that changes no state (a dispatch) to the history of a sector in
        ``state``."""
        self.client.xadd(
            self._history_key(sector_id),
            {
                "at": int(time.time() * 1000),
                "actor": actor,
                "event": event,
                "from": state.value,
                "to": state.value,
                "detail": detail,
            },
        )

    def near_deadline(self, before_epoch: int) -> list[str]:
        """Ids of live sectors whose earliest deadline falls at or before ``before_epoch``."""
        return self.client.zrangebyscore(self._deadlines_key, "-inf", before_epoch)

    def expired_leases(self) -> list[str]:
        """Ids of sectors whose running phase lost its lease (worker dead or hung)."""
        now_s, now_us = self.client.time()
        return self.client.zrangebyscore(self._leases_key, "-inf", now_s * 1000 + now_us // 1000)

    # -- leases -------------------------------------------------------------------------

    def claim(
        self,
        sector_id: str,
        phase: SectorState,
        worker: str,
        lease_s: float | None = None,
        host: str | None = None,
    ) -> Claim | None:
        """Take the lease on ``phase`` of the sector, or None when it can't be had.

        It can be had when the sector is in ``phase`` and the phase is queued, or running
        under a lease that has expired. Each success returns a new, larger fencing token.
        With ``host`` (phases that touch temp files) an unbound sector is bound to that
        host, and a sector bound to another host is refused.
        """
        lease_ms = int(1000 * (lease_s or self.lease_s))
        token, expires, *record = self._claim(
            keys=[
                self._sector_key(sector_id),
                f"{self.prefix}:fence",
                self._leases_key,
                self._history_key(sector_id),
            ],
            args=[phase.value, worker, lease_ms, host or ""],
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

        StaleToken when another claim (or a move) has ended the lease.
        """
        lease_ms = int(1000 * (lease_s or self.lease_s))
        expires = self._renew(
            keys=[self._sector_key(lease.sector_id), self._leases_key],
            args=[lease.token, lease_ms, *_pairs(encode_fields(dict(updates or {})))],
        )
        if not expires:
            raise StaleToken(f"{lease.sector_id}: token {lease.token} no longer holds the lease")
        return Lease(lease.sector_id, lease.phase, lease.worker, lease.token, int(expires))

    def complete(
        self, lease: Lease, updates: Mapping[str, Any] | None = None, detail: str = ""
    ) -> Sector:
        """Finish the leased phase: the sector moves on to the next state, queued there.
        Returns the record as the move left it."""
        moved = self._apply_move(
            lease.sector_id,
            next_state(lease.phase),
            actor=lease.worker,
            event="complete",
            detail=detail,
            updates=updates,
            lease=lease,
            record=True,
        )
        return _sector(moved)

    def fail(self, lease: Lease, error: str, *, retry: bool) -> SectorState:
        """Record a failed attempt: requeue the phase when ``retry``, else move to Failed."""
        target = lease.phase if retry else SectorState.FAILED
        self._apply_move(
            lease.sector_id,
            target,
            actor=lease.worker,
            event="retry" if retry else "fail",
            detail=error,
            updates={"last_error": error, "failed_phase": None if retry else lease.phase.value},
            lease=lease,
            sources=[lease.phase],
        )
        return target

    def release(self, lease: Lease, reason: str = "handed back") -> Sector:
        """Give the phase back unfinished (worker shutting down): it is queued again.
        Returns the record as the move left it."""
        moved = self._apply_move(
            lease.sector_id,
            lease.phase,
            actor=lease.worker,
            event="release",
            detail=reason,
            lease=lease,
            sources=[lease.phase],
            record=True,
        )
        return _sector(moved)

    # -- unfenced moves (operator, supervisor) --------------------------------------------

    def move(
        self,
        sector_id: str,
        target: SectorState,
        *,
        actor: str,
        event: str = "move",
        detail: str = "",
        updates: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Sector:
        """Move the sector to ``target`` if the state machine allows it from where it is.

        With ``expected_version`` the move happens only if the sector is still at that
        version (the caller decided on a record it read), else ChangedMeanwhile.
        """
        condition = "" if expected_version is None else f"={expected_version}"
        moved = self._apply_move(
            sector_id,
            target,
            actor=actor,
            event=event,
            detail=detail,
            updates=updates,
            condition=condition,
            record=True,
        )
        return _sector(moved)

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
        lease = Lease(
            sector.id,
            sector.state,
            sector.lease_owner or "",
            sector.lease_token,
            sector.lease_expires_ms or 0,
        )
        try:
            moved = self._apply_move(
                sector.id,
                target,
                actor=actor,
                event="take-over",
                detail=detail,
                updates=updates,
                lease=lease,
                condition="expired",
                sources=allowed_sources(target) | ({target} & {sector.state}),
                record=True,
            )
        except StaleToken:
            return None
        return _sector(moved)

    def prioritize(self, sector_id: str, priority: int, actor: str, reason: str) -> bool:
        """Give the sector a new priority (0 = most urgent); False if it had it already."""
        return bool(
            self._prioritize(
                keys=[self._sector_key(sector_id), self._history_key(sector_id)],
                args=[self.prefix, priority, actor, reason],
            )
        )

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the pool's counters (re-tickets, take-overs, …)."""
        self.client.hincrby(f"{self.prefix}:counters", name, amount)

    def counters(self) -> dict[str, int]:
        """The pool's counters."""
        return {k: int(v) for k, v in self.client.hgetall(f"{self.prefix}:counters").items()}

    def _apply_move(
        self,
        sector_id: str,
        target: SectorState,
        *,
        actor: str,
        event: str,
        detail: str,
        updates: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
        sources: Iterable[SectorState] | None = None,
        condition: str = "",
        record: bool = False,
    ) -> list[str]:
        """Run MOVE; the record's flat field-value list after it when ``record``, else []."""
        allowed = allowed_sources(target) if sources is None else frozenset(sources)
        status = status_on_entry(target)
        moved, reason, current = self._move(
            keys=[
                self._sector_key(sector_id),
                self._history_key(sector_id),
                self._leases_key,
                self._deadlines_key,
            ],
            args=[
                self.prefix,
                lease.token if lease else "",
                lease.phase.value if lease else "",
                target.value,
                status.value if status else "",
                ",".join(state.value for state in allowed),
                "1" if target in TERMINAL else "0",
                actor,
                event,
                detail,
                condition,
                "1" if record else "0",
                *_pairs(encode_fields(dict(updates or {}))),
            ],
        )
        if moved:
            return current
        if reason == "no such sector":
            raise SectorNotFound(f"no sector {sector_id!r} in pool {self.prefix!r}")
        if reason == "stale token":
            raise StaleToken(
                f"{sector_id}: token {lease.token if lease else ''} no longer "
                f"holds {lease.phase if lease else ''} (sector is in {current})"
            )
        if reason == "changed meanwhile":
            raise ChangedMeanwhile(f"{sector_id}: changed since it was read; not moved")
        raise IllegalTransition(f"{sector_id}: illegal transition {current} → {target}")


def _sector(flat: list[str]) -> Sector:
    """The record from a script's HGETALL reply (a flat field, value list)."""
    return Sector.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


__all__ = ["KINDS", "Claim", "HistoryEntry", "Lease", "PhaseStatus", "SectorStore"]
