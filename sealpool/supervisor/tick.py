"""``Supervisor``: one tick keeps the farm running without an operator.

Each tick of the leading supervisor, in order:

1. Take over expired leases (worker died or hung): the phase is queued again, for the same
   host when it reads the sector's temp data. Only a host all of whose phase processes
   have been silent for ``host_lost_grace_s`` is lost, its temp data with it: a sector
   whose precommit can't have been sent yet restarts from AddPiece on any host; one that
   needs the lost temp data after its precommit fails with the reason (a new ticket would
   orphan the precommit and its deposit).
2. Messages: send what is still in the outbox (a sender crashed between its move and its
   send, or the broker was away), and replace messages that were sent, not claimed, and
   are nowhere in the broker (a worker took one and died). Batches of precommits and
   prove-commits are cut, sent and watched, and the members of landed ones moved on.
3. Deadlines: a sector whose ticket can't last through PC2 and precommit is re-ticketed
   (PC1 redone) or aborted, per ``expired_ticket`` — never once its precommit was sent; one
   whose deadline comes close is raised to the top of its queue.
4. Keep the pool full: enough sectors in front of the PC1 slots for every free slot plus a
   look-ahead — Pending sectors first, then sectors packed from waiting deals, then CC
   sectors if ``cc_fill``; deal sectors count only the deal sectors in front, so an arriving
   deal starts at once — no faster than one per ``create_interval_s``, and no faster than
   the farm's bottleneck phase can absorb; each bound at its start to the host whose next
   PC1 slot frees soonest (:mod:`sealpool.supervisor.placement`).

Every action is fenced in the store (expired-token take-over, version-checked moves,
Pending → AddPiece once, request-id creation with its deals), and the starts and creations
by the leader's token in the same script: a supervisor that lost the lead mid-tick changes
nothing more.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from sealpool.backends import SECTOR_BYTES
from sealpool.chain.policy import TICKET_PHASES, ticket_work_epochs
from sealpool.config import EPOCH_SECONDS, MinerConfig
from sealpool.deals import DealBook
from sealpool.errors import (
    ChangedMeanwhile,
    DealTaken,
    IllegalTransition,
    NotLeader,
    NumbersExhausted,
)
from sealpool.miners import below_cap, configured, number_range, ranked, sealing_counts
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.batched import pump as pump_batches
from sealpool.sealing_tasks.dispatch import (
    URGENT_PRIORITY,
    deliver_outbox,
    dispatch,
    recover_lost,
    start,
)
from sealpool.store import PhaseStatus, Sector, SectorKind, SectorState, parse_sector_id
from sealpool.store.states import RESTART_FROM
from sealpool.supervisor.leader import LeaderLease
from sealpool.supervisor.placement import (
    heading_to_pc1,
    place,
    placeable,
    shortfall,
)
from sealpool.supervisor.ratio import phase_times, suggest
from sealpool.worker_profiles.slots import (
    RUNNING,
    SlotReport,
    holder_alive,
    live_slots,
    lost_hosts,
    slot_reports,
)

log = logging.getLogger(__name__)
S = SectorState
# After its precommit, a sector in these states still needs temp data on its host.
NEEDS_SCRATCH_AFTER_PRECOMMIT = (S.COMMIT_1, S.FINALIZE)
PENDING_SCAN = 64  # Pending sectors looked at for one whose miner is not at its cap


@dataclass
class TickReport:
    """What one tick did (lists of sector ids)."""

    leader: bool
    took_over: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reticketed: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    prioritized: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Supervisor:
    """A pool's supervisor; several may run, one leads."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.rt = runtime
        self.name = name
        self.store = runtime.store
        self.deals = DealBook(runtime.store.client, runtime.store.prefix)
        self.lease = LeaderLease(
            self.store.client, self.store.prefix, name, runtime.settings.leader_lease_s
        )

    def tick(self) -> TickReport:
        """Lead if possible and act; a standby only reports that it does not lead."""
        if not self.lease.hold():
            return TickReport(leader=False)
        return self.act()

    def act(self) -> TickReport:
        """One round of actions (called by the leader; safe to call concurrently)."""
        began = time.perf_counter()
        report = TickReport(leader=True)
        slots = slot_reports(self.store.client, self.store.prefix)
        self.take_over_expired(report)
        self.send_messages(slots, report)
        pump_batches(self.rt, self.name)
        self.watch_deadlines(report)
        try:
            self.fill(slots, report)
        except NotLeader:
            log.info("%s lost the lead mid-tick: no more starts", self.name)
        report.seconds = time.perf_counter() - began
        return report

    def _send(self, sector: Sector) -> None:
        dispatch(self.store, sector, actor=self.name, bind_host=self.rt.settings.host_binding)

    # -- 1. dead workers ---------------------------------------------------------------

    def take_over_expired(self, report: TickReport) -> None:
        grace_s = self.rt.settings.host_lost_grace_s
        lost = lost_hosts(self.store.client, self.store.prefix, grace_s)
        for sector in self.store.get_many(self.store.expired_leases()):
            if sector.host in lost and self._lost_with_host(sector, report):
                continue
            if taken := self.store.take_over(
                sector,
                sector.state,
                actor=self.name,
                detail=f"lease of {sector.lease_owner} expired",
            ):
                self.store.count("took_over")
                report.took_over.append(sector.id)
                self._send(taken)
        if lost:  # sectors waiting in the queues of a lost host will never be taken
            for state in (*RESTART_FROM, *NEEDS_SCRATCH_AFTER_PRECOMMIT):
                for sector in self.store.get_many(self.store.ids_in_state(state)):
                    if sector.host in lost and sector.status is PhaseStatus.QUEUED:
                        self._lost_with_host(sector, report)

    def _lost_with_host(self, sector: Sector, report: TickReport) -> bool:
        """Deal with a sector whose temp data went with its lost host: restart it before
        its precommit, fail it after (needing that data); False when it needs none."""
        if sector.state in RESTART_FROM:
            moved = self._move_off_host(
                sector,
                S.ADD_PIECE,
                f"host {sector.host} lost: restart from AddPiece",
                {
                    "host": None, "temp_path": None, "ticket": None, "outputs": {},
                    "deadlines": {}, "deadline_epoch": None,
                },
            )  # fmt: skip
            if moved is not None:
                self.store.count("restarted")
                report.restarted.append(sector.id)
                self._send(moved)
            return True
        if sector.state in NEEDS_SCRATCH_AFTER_PRECOMMIT:
            why = (
                f"host {sector.host} lost with the temp data {sector.state} needs after the "
                "precommit: reseal with the on-chain ticket where the inputs are, or abort"
            )
            failed = self._move_off_host(
                sector, S.FAILED, why, {"last_error": why, "failed_phase": sector.state.value}
            )
            if failed is not None:
                self.store.count("failed_host_lost")
                report.failed.append(sector.id)
            return True
        return False

    def _move_off_host(
        self, sector: Sector, target: SectorState, why: str, updates: dict[str, object]
    ) -> Sector | None:
        """Move a sector of a lost host: fenced by its expired lease, or by its version."""
        if sector.status is PhaseStatus.RUNNING:
            moved = self.store.take_over(
                sector, target, actor=self.name, updates=updates, detail=why
            )
        else:
            try:
                moved = self.store.move(
                    sector.id,
                    target,
                    actor=self.name,
                    updates=updates,
                    event="restart" if target is S.ADD_PIECE else "fail",
                    detail=why,
                    sources=[sector.state],
                    expected_version=sector.version,
                )
            except (ChangedMeanwhile, IllegalTransition):
                moved = None
        if moved is not None:
            self.rt.scratch.release(sector.host or "", sector.id)
        return moved

    # -- 2. messages ---------------------------------------------------------------------

    def send_messages(self, slots: list[SlotReport], report: TickReport) -> None:
        """Send the outbox's overdue messages; replace lost ones (at most twice per
        ``lost_message_s``, as it reads the broker's queues)."""
        settings = self.rt.settings
        bind = settings.host_binding
        grace_ms = int(settings.outbox_grace_s * 1000)
        report.redispatched += deliver_outbox(
            self.store, actor=self.name, bind_host=bind, grace_ms=grace_ms
        )
        scan_key = f"{self.store.prefix}:supervisor:lost-scan"
        if not self.store.client.set(
            scan_key, self.name, nx=True, px=int(settings.lost_message_s * 500)
        ):
            return
        report.redispatched += recover_lost(
            self.store,
            actor=self.name,
            bind_host=bind,
            lost_ms=int(settings.lost_message_s * 1000),
            hosts={slot.host for slot in slots},
            holder_alive=lambda holder: holder_alive(self.store.client, self.store.prefix, holder),
        )

    # -- 2. deadlines --------------------------------------------------------------------

    def remaining_epochs(self, sector: Sector) -> float:
        """Epochs the sector still needs to get its precommit on chain."""
        settings = self.rt.settings
        epochs = ticket_work_epochs(settings, sector.state)
        if sector.status is PhaseStatus.RUNNING:  # part of the current phase is done
            done_s = (self.store.now_ms() - sector.updated_ms) / 1000 * settings.time_scale
            epochs -= (
                min(done_s, settings.phase_seconds.get(sector.state.value, 0.0)) / EPOCH_SECONDS
            )
        return epochs

    def watch_deadlines(self, report: TickReport) -> None:
        settings = self.rt.settings
        head = self.rt.chain.head()
        horizon = head + ticket_work_epochs(settings) + settings.risk_margin_epochs
        for sector in self.store.get_many(self.store.near_deadline(horizon)):
            expiry = sector.deadlines.get("ticket_expiry")
            if expiry is not None and sector.state in TICKET_PHASES:
                finish = head + self.remaining_epochs(sector)
                if finish > expiry:
                    self._ticket_runs_out(sector, expiry, finish, report)
                    continue
                if finish + settings.risk_margin_epochs > expiry:
                    self._raise(sector, f"ticket expires at {expiry}", report)
            deadline = sector.deadlines.get("prove_commit")
            if deadline is not None and head + settings.risk_margin_epochs > deadline:
                self._raise(sector, f"prove-commit deadline {deadline}", report)

    def _ticket_runs_out(
        self, sector: Sector, expiry: int, finish: float, report: TickReport
    ) -> None:
        if _precommit_may_be_sent(sector):
            return  # it lands or fails on chain: never re-ticketed meanwhile
        why = f"ticket expires at {expiry}, precommit could land at {finish:.0f} at best"
        reticket = self.rt.settings.expired_ticket == "reticket"
        target = S.PRE_COMMIT_1 if reticket else S.ABORTED
        updates: dict[str, object] = {}
        if reticket:  # everything computed from the old ticket goes with it
            kept = {S.ADD_PIECE.value: sector.outputs.get(S.ADD_PIECE.value, {})}
            updates = {"ticket": None, "deadlines": {}, "deadline_epoch": None, "outputs": kept}
        try:
            moved = self.store.move(
                sector.id,
                target,
                actor=self.name,
                updates=updates,
                event="reticket" if reticket else "abort",
                detail=why,
                expected_version=sector.version,
            )
        except (ChangedMeanwhile, IllegalTransition):
            return
        if reticket:
            self.store.count("reticketed")
            report.reticketed.append(sector.id)
            self._send(moved)
        else:
            self.rt.scratch.release(sector.host or "", sector.id)
            self.store.count("aborted_ticket_expired")
            report.aborted.append(sector.id)

    def _raise(self, sector: Sector, reason: str, report: TickReport) -> None:
        """Put the sector at the top of its queue: a queued phase gets a new message, sent
        now at the front (its old one is dead). One raised already, as read, costs nothing."""
        if sector.priority == URGENT_PRIORITY:
            return
        if raised := self.store.prioritize(sector.id, URGENT_PRIORITY, self.name, reason):
            report.prioritized.append(sector.id)
            self._send(raised)

    # -- 3. keep the pool full ---------------------------------------------------------

    def fill(self, slots: list[SlotReport], report: TickReport) -> None:
        """Start sectors until each free PC1 slot has one heading to it, plus the
        look-ahead (:func:`~sealpool.supervisor.placement.shortfall`); deal sectors count
        only the deal sectors in front of them (a deal outranks CC sectors in the queues,
        so it never waits for them to start)."""
        settings = self.rt.settings
        lookahead, binding = settings.lookahead, settings.host_binding
        allowed = self._starts_allowed(slots)
        if allowed <= 0:
            return
        pc1 = [s for s in slots if s.phase == S.PRE_COMMIT_1.value]
        # a new sector can fill only the idle slots of a host it can be bound to (all of
        # them when none can: it then goes to the shared AddPiece queue, bound to none)
        hosts = placeable(slots) if binding else set()
        idle = Counter(
            s.host for s in pc1 if s.state == "idle" and (s.host in hosts or not hosts)
        )  # not paused, draining, lost
        running = {s.sector for s in pc1 if s.state in RUNNING and s.sector}
        counts = self.store.counts()
        in_front = sum(counts[S.ADD_PIECE].values()) + sum(counts[S.PRE_COMMIT_1].values())
        deals_wait = counts[S.PENDING].get("deal", 0) > 0 or self.deals.waiting_count() > 0
        if not idle and in_front - len(running) >= lookahead and not deals_wait:
            return  # nothing to start: no free slot, the look-ahead queued, no deal waiting
        heading = self._heading(running)
        by_kind = {
            "cc": heading_to_pc1(heading),
            "deal": heading_to_pc1(s for s in heading if s.kind == "deal"),
        }
        room = idle.total() + lookahead
        now_ms = self.store.now_ms()
        pc1_ms = settings.wall_phase_seconds[S.PRE_COMMIT_1.value] * 1000
        allowed = min(allowed, shortfall(idle, by_kind["cc"], lookahead) + room)
        while allowed > 0:
            cc = shortfall(idle, by_kind["cc"], lookahead) > 0
            deal = deals_wait and by_kind["deal"].total() < room
            sector = self._next_sector(cc=cc) if cc or deal else None
            if sector is None:
                break
            allowed -= 1
            host = None
            if binding:
                soonest_end = sector.kind == "deal"
                host = place(slots, by_kind[sector.kind], now_ms, pc1_ms, soonest_end=soonest_end)
            try:
                start(self.store, sector.id, actor=self.name, leader=self.lease.fence, host=host)
                report.started.append(sector.id)
            except IllegalTransition:  # another supervisor started it: heading somewhere
                host = None
            for kind in {"cc", sector.kind}:  # a CC start waits for every sector in front
                by_kind[kind][host or ""] += 1

    def _heading(self, running: set[str]) -> list[Sector]:
        """Sectors in AddPiece, and in PC1 but on no slot that reports it ``running``: a
        sector just claimed, whose slot does not show busy yet, still counts (its slot
        still counts idle)."""
        pc1 = [i for i in self.store.ids_in_state(S.PRE_COMMIT_1) if i not in running]
        return self.store.get_many(self.store.ids_in_state(S.ADD_PIECE) + pc1)

    def _next_sector(self, cc: bool) -> Sector | None:
        """Deal sectors first (Pending ones, then new ones packed from waiting deals for the
        first miner), then, if ``cc``, Pending CC sectors, then a new CC sector for the
        miner whose turn it is among those with ``cc_fill`` (see
        :func:`sealpool.miners.ranked`). A miner at its ``max_sealing`` gets none; a miner
        whose numbers ran out is skipped."""
        settings = self.rt.settings
        miners = configured(settings)
        counts = sealing_counts(self.store, miners)
        capped = {miner.id for miner in miners if not below_cap(miner, counts)}
        if pending := self._pending("deal", capped):
            return pending
        first = miners[0]
        deals = [] if first.id in capped else self.deals.pack(SECTOR_BYTES[settings.sector_size])
        if deals:
            ids = sorted(deal.deal_id for deal in deals)
            try:
                return self._create(first, "deal", "deals:" + ",".join(map(str, ids)), tuple(ids))
            except DealTaken:  # packed by another sector meanwhile: pack again next tick
                return None
            except NumbersExhausted as exc:
                log.warning("%s", exc)
        if not cc:
            return None
        if pending := self._pending("cc", capped):
            return pending
        for miner in ranked(miners, counts, lambda m: _cc_fill(m, settings.cc_fill)):
            # the request id names the pool as read: one sector per view
            after = self.store.last_number(miner.id)
            try:
                return self._create(miner, "cc", f"cc-fill:{miner.id}:after:{after}")
            except NumbersExhausted as exc:
                log.warning("%s", exc)
        return None

    def _pending(self, kind: SectorKind, capped: set[str]) -> Sector | None:
        """The most urgent Pending sector of ``kind`` whose miner is not at its cap."""
        for sector_id in self.store.ids_in_state(S.PENDING, kind=kind, limit=PENDING_SCAN):
            if parse_sector_id(sector_id)[0] not in capped:
                return self.store.get(sector_id)
        return None

    def _create(
        self, miner: MinerConfig, kind: SectorKind, request_id: str, deal_ids: tuple[int, ...] = ()
    ) -> Sector:
        """A new sector of ``miner``, numbered above what its actor has allocated."""
        return self.store.create(
            miner.id,
            kind,
            deal_ids=deal_ids,
            actor=self.name,
            request_id=request_id,
            leader=self.lease.fence,
            numbers=number_range(miner, self.rt.chain_for(miner.id)),
        )

    def _starts_allowed(self, slots: list[SlotReport]) -> int:
        """Starts this tick may make: one per ``create_interval_s`` of farm time, and, when
        a phase after PC1 is the bottleneck, no faster than that phase finishes sectors."""
        settings = self.rt.settings
        interval_s = settings.wall_seconds(settings.create_interval_s)
        current = live_slots(slots)
        if current.get(S.PRE_COMMIT_1.value):
            times = phase_times([], settings.wall_phase_seconds)
            ratio = suggest(times, current[S.PRE_COMMIT_1.value], current)
            downstream = ratio.bottleneck not in (S.ADD_PIECE.value, S.PRE_COMMIT_1.value)
            if downstream and ratio.sectors_per_day > 0:
                interval_s = max(interval_s, 86400 / ratio.sectors_per_day)
        if interval_s <= 0:
            return 1 << 30
        last_ms = int(self.store.client.get(self.store.keys.last_start) or 0)
        return int((self.store.now_ms() - last_ms) / 1000 / interval_s)


def _precommit_may_be_sent(sector: Sector) -> bool:
    """Whether the sector's precommit message may be on its way (its intent is recorded
    before the push): a new ticket then would orphan it."""
    attempt = sector.outputs.get(S.PRE_COMMITTING.value, {})
    return "batch" in attempt or "uuid" in attempt or "cid" in attempt


def _cc_fill(miner: MinerConfig, default: bool) -> bool:
    """Whether ``miner`` gets new CC sectors: its own ``cc_fill``, else the pool's."""
    return default if miner.cc_fill is None else miner.cc_fill
