"""``Supervisor``: one tick keeps the farm running without an operator.

Each tick of the leading supervisor, in order:

1. Take over expired leases (worker died or hung). If the sector's host still heartbeats,
   the phase is queued again for that host; if the host is gone, its temp data went with
   it: a temp phase restarts from AddPiece on any host, scratch reservation released.
2. Deadlines: a sector whose ticket can't last through PC2 and precommit is re-ticketed
   (PC1 redone) or aborted, per ``expired_ticket``; one whose deadline comes close is raised
   to the top of its queue.
3. Keep the pool full: enough sectors in front of the PC1 slots for every free slot plus a
   look-ahead — Pending sectors first, then sectors packed from waiting deals, then CC
   sectors if ``cc_fill`` — no faster than one per ``create_interval_s``, and no faster
   than the farm's bottleneck phase can absorb.

Every action is fenced in the store (expired-token take-over, version-checked moves,
Pending → AddPiece once, request-id creation), so two supervisors acting at once still make
one sector per request and one dispatch per action.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sealpool import routing
from sealpool.backends import SECTOR_BYTES
from sealpool.config import EPOCH_SECONDS
from sealpool.deals import DealBook
from sealpool.errors import ChangedMeanwhile, IllegalTransition
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.dispatch import URGENT_PRIORITY, dispatch, messages_waiting, start
from sealpool.sealing_tasks.steps import TICKET_PHASES, ticket_work_epochs
from sealpool.store import WORK_PHASES, PhaseStatus, Sector, SectorState
from sealpool.supervisor.leader import LeaderLease
from sealpool.supervisor.ratio import phase_times, suggest
from sealpool.worker_profiles.slots import SlotReport, live_slots, slot_reports

log = logging.getLogger(__name__)
S = SectorState
# States whose next work reads the sector's scratch on its host (Commit2 and Committing
# need only outputs kept in the store).
NEEDS_SCRATCH = (
    S.ADD_PIECE,
    S.PRE_COMMIT_1,
    S.PRE_COMMIT_2,
    S.PRE_COMMITTING,
    S.WAIT_SEED,
    S.COMMIT_1,
    S.FINALIZE,
)


@dataclass
class TickReport:
    """What one tick did (lists of sector ids)."""

    leader: bool
    took_over: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
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
        self.take_over_expired(slots, report)
        self.redispatch_lost(report)
        self.watch_deadlines(report)
        self.fill(slots, report)
        report.seconds = time.perf_counter() - began
        return report

    # -- 1. dead workers ---------------------------------------------------------------

    def take_over_expired(self, slots: list[SlotReport], report: TickReport) -> None:
        registered = {slot.host for slot in slots}
        lost = registered - {slot.host for slot in slots if slot.state != "lost"}
        for sector in self.store.get_many(self.store.expired_leases()):
            if sector.host in lost and sector.state in NEEDS_SCRATCH:
                self._restart(sector, report)
            elif taken := self.store.take_over(
                sector,
                sector.state,
                actor=self.name,
                detail=f"lease of {sector.lease_owner} expired",
            ):
                self.store.count("took_over")
                report.took_over.append(sector.id)
                dispatch(self.store, taken, actor=self.name)
        if lost:  # sectors waiting in the queues of a lost host will never be taken
            for state in NEEDS_SCRATCH:
                for sector in self.store.get_many(self.store.ids_in_state(state)):
                    if sector.host in lost and sector.status is PhaseStatus.QUEUED:
                        self._restart(sector, report)

    def _restart(self, sector: Sector, report: TickReport) -> None:
        """The sector's temp data is lost with its host: start over on any host."""
        fresh = {
            "host": None,
            "temp_path": None,
            "ticket": None,
            "outputs": {},
            "deadlines": {},
            "deadline_epoch": None,
        }
        why = f"host {sector.host} lost: restart from AddPiece"
        moved: Sector | None
        if sector.status is PhaseStatus.RUNNING:
            moved = self.store.take_over(
                sector, S.ADD_PIECE, actor=self.name, updates=fresh, detail=why
            )
        else:
            try:
                moved = self.store.move(
                    sector.id,
                    S.ADD_PIECE,
                    actor=self.name,
                    updates=fresh,
                    event="restart",
                    detail=why,
                    expected_version=sector.version,
                )
            except (ChangedMeanwhile, IllegalTransition):
                moved = None
        if moved is not None:
            self.rt.scratch.release(sector.host or "", sector.id)
            self.store.count("restarted")
            report.restarted.append(sector.id)
            dispatch(self.store, moved, actor=self.name)

    def redispatch_lost(self, report: TickReport) -> None:
        """Send again the phase of a sector queued for a while with no message in its queue
        (a worker died between taking the message and claiming the sector). It reads every
        in-flight sector, so it runs at most twice per ``lost_message_s``."""
        settings = self.rt.settings
        scan_key = f"{self.store.prefix}:supervisor:lost-scan"
        if not self.store.client.set(
            scan_key, self.name, nx=True, px=int(settings.lost_message_s * 500)
        ):
            return  # scanned less than half a lost_message_s ago
        stale_ms = (time.time() - settings.lost_message_s) * 1000
        for state in WORK_PHASES:
            for sector in self.store.get_many(self.store.ids_in_state(state)):
                if sector.status is not PhaseStatus.QUEUED or sector.updated_ms > stale_ms:
                    continue
                host = sector.host if settings.host_binding else None
                queue = routing.route(self.store.prefix, state, sector.kind, host)["queue"]
                if messages_waiting(self.store.client, queue):
                    continue
                once = f"{self.store.prefix}:redispatched:{sector.id}:{sector.version}"
                if self.store.client.set(once, self.name, nx=True, ex=86400):
                    report.redispatched.append(sector.id)
                    dispatch(self.store, sector, actor=self.name, bind_host=settings.host_binding)

    # -- 2. deadlines --------------------------------------------------------------------

    def remaining_epochs(self, sector: Sector) -> float:
        """Epochs the sector still needs to get its precommit on chain."""
        settings = self.rt.settings
        epochs = ticket_work_epochs(settings, sector.state)
        if sector.status is PhaseStatus.RUNNING:  # part of the current phase is done
            done_s = (time.time() * 1000 - sector.updated_ms) / 1000 * settings.time_scale
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
        why = f"ticket expires at {expiry}, precommit could land at {finish:.0f} at best"
        reticket = self.rt.settings.expired_ticket == "reticket"
        target = S.PRE_COMMIT_1 if reticket else S.ABORTED
        updates = {"ticket": None, "deadlines": {}, "deadline_epoch": None} if reticket else {}
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
            dispatch(self.store, moved, actor=self.name)
        else:
            self.rt.scratch.release(sector.host or "", sector.id)
            self.store.count("aborted_ticket_expired")
            report.aborted.append(sector.id)

    def _raise(self, sector: Sector, reason: str, report: TickReport) -> None:
        if self.store.prioritize(sector.id, URGENT_PRIORITY, self.name, reason):
            report.prioritized.append(sector.id)
            fresh = self.store.get(sector.id)
            if fresh.status is PhaseStatus.QUEUED:  # send it again, now at the front
                dispatch(self.store, fresh, actor=self.name)

    # -- 3. keep the pool full ---------------------------------------------------------

    def fill(self, slots: list[SlotReport], report: TickReport) -> None:
        counts = {state: sum(by_kind.values()) for state, by_kind in self.store.counts().items()}
        pc1 = [s for s in slots if s.phase == S.PRE_COMMIT_1.value and s.state != "lost"]
        busy_pc1 = sum(1 for s in pc1 if s.state == "busy")
        heading_to_pc1 = counts[S.ADD_PIECE] + counts[S.PRE_COMMIT_1] - busy_pc1
        wanted = len(pc1) - busy_pc1 + self.rt.settings.lookahead - heading_to_pc1
        last_key = f"{self.store.prefix}:supervisor:last_start_ms"
        for _ in range(min(wanted, self._starts_allowed(slots, last_key))):
            sector = self._next_sector()
            if sector is None:
                break
            try:
                start(self.store, sector.id, actor=self.name)
            except IllegalTransition:  # another supervisor started it first
                continue
            report.started.append(sector.id)
        if report.started:
            self.store.client.set(last_key, int(time.time() * 1000))

    def _next_sector(self) -> Sector | None:
        """Deal sectors first (Pending ones, then new ones packed from waiting deals), then
        Pending CC sectors, then a new CC sector if ``cc_fill``."""
        settings = self.rt.settings
        pending = self.store.ids_in_state(S.PENDING, kind="deal", limit=1)
        if pending:
            return self.store.get(pending[0])
        deals = self.deals.pack(SECTOR_BYTES[settings.sector_size])
        if deals:
            ids = sorted(deal.deal_id for deal in deals)
            sector = self.store.create(
                settings.miner,
                "deal",
                deal_ids=ids,
                actor=self.name,
                request_id="deals:" + ",".join(map(str, ids)),
            )
            self.deals.assign(deals)
            return sector
        pending = self.store.ids_in_state(S.PENDING, kind="cc", limit=1)
        if pending:
            return self.store.get(pending[0])
        if settings.cc_fill:  # the request id names the pool as read: one sector per view
            after = self.store.last_number(settings.miner)
            return self.store.create(
                settings.miner, "cc", actor=self.name, request_id=f"cc-fill:after:{after}"
            )
        return None

    def _starts_allowed(self, slots: list[SlotReport], last_key: str) -> int:
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
        last_ms = int(self.store.client.get(last_key) or 0)
        return int((time.time() * 1000 - last_ms) / 1000 / interval_s)
