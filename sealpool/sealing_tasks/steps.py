"""What each phase does between its claim and its completion.

Each step gets a :class:`PhaseContext` and returns the fields to store with the completion.
Steps raise PhaseError for failures the runner retries or records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sealpool.backends import SECTOR_BYTES, PhaseRequest, Slot
from sealpool.chain import Message, MessageKind
from sealpool.config import EPOCH_SECONDS, Settings
from sealpool.errors import ChainError, PhaseError
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import Runtime
from sealpool.scratch_lease import stamp_scratch
from sealpool.sealing_tasks.lease_keeper import LeaseKeeper
from sealpool.storage import roomiest, sector_dir
from sealpool.store import Randomness, Sector, SectorState

S = SectorState
MAX_PROVE_COMMIT_EPOCHS = 30 * 2880 + 150
TICKET_PHASES = (S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.PRE_COMMITTING)  # a ticket must outlast
MIN_POLL_S = 0.02  # however fast the clock, never spin on the chain
SEED_POLL_MAX_S = 600.0  # a seed wait is re-checked at least this often (wall seconds)


@dataclass
class PhaseContext:
    """One running phase: its sector, resources and collaborators."""

    runtime: Runtime
    sector: Sector
    phase: SectorState
    slot: Slot
    keeper: LeaseKeeper

    def outputs(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The completion field that adds this phase's ``outputs`` to the sector's."""
        return {"outputs": {**self.sector.outputs, self.phase.value: outputs}}

    def compute(self, **changes: Any) -> dict[str, Any]:
        """Run the backend for this phase (with ``changes`` to the request), the sector's
        scratch stamped with this attempt's token first."""
        sector = self.sector
        request = PhaseRequest(
            sector_id=sector.id, miner=sector.miner, number=sector.number,
            phase=self.phase.value, sector_size=SECTOR_BYTES[self.runtime.settings.sector_size],
            temp_path=sector.temp_path or "", sealed_path=sector.sealed_path,
            ticket=sector.ticket.model_dump() if sector.ticket else None,
            seed=sector.seed.model_dump() if sector.seed else None,
            deal_ids=sector.deal_ids, inputs=sector.outputs, token=self.keeper.lease.token,
        )  # fmt: skip
        request = replace(request, **changes)
        if self.phase in TEMP_PHASES and (scratch := self._scratch(request.temp_path)):
            stamp_scratch(scratch, request.token, f"{self.phase} of {sector.id}")
        return self.runtime.backend.run(request, self.slot, self.keeper.cancelled)

    def _scratch(self, temp_path: str) -> Path | None:
        """The sector's scratch directory, if ``temp_path`` is one under the slot's roots."""
        for root in self.slot.temp_dirs:
            if temp_path and Path(temp_path).resolve() == sector_dir(root, self.sector.id):
                return Path(temp_path)
        return None


def add_piece(ctx: PhaseContext) -> dict[str, Any]:
    temp_path = str(ctx.runtime.reserve_scratch(ctx.sector.id, ctx.slot))
    return {"temp_path": temp_path, **ctx.outputs(ctx.compute(temp_path=temp_path))}


def pre_commit_1(ctx: PhaseContext) -> dict[str, Any]:
    ticket = usable_ticket(ctx)
    outputs = ctx.compute(ticket=ticket.model_dump())
    expiry = ticket.epoch + ctx.runtime.settings.max_ticket_age
    return {
        "ticket": ticket,
        "deadlines": {"ticket_expiry": expiry},
        "deadline_epoch": expiry,
        **ctx.outputs(outputs),
    }


def usable_ticket(ctx: PhaseContext) -> Randomness:
    """The sector's ticket if it lasts through PC1, PC2 and precommit, else a fresh one.

    A fresh ticket is taken ``ticket_confidence`` epochs below the head, so no reorg can
    change it. With ``expired_ticket = "abort"`` an old ticket is not replaced; a ticket
    that can't last (old, or fresh but too short-lived) never starts PC1.
    """
    settings, chain, sector = ctx.runtime.settings, ctx.runtime.chain, ctx.sector
    head = chain.head()
    needed = ticket_work_epochs(settings)
    ticket = sector.ticket
    if ticket is None or (
        _lasts_until(ticket, settings.max_ticket_age) < head + needed
        and settings.expired_ticket == "reticket"
    ):
        epoch = head - settings.ticket_confidence
        ticket = Randomness(epoch=epoch, value=chain.randomness("ticket", epoch, sector.miner))
    expiry = _lasts_until(ticket, settings.max_ticket_age)
    if expiry < head + needed:
        raise PhaseError(
            f"{sector.id}: ticket of epoch {ticket.epoch} expires at {expiry}, but PC1, PC2 and "
            f"precommit need until epoch {head + int(needed)}: PC1 not started",
            retry=False,
        )
    return ticket


def ticket_work_epochs(settings: Settings, since: SectorState = S.PRE_COMMIT_1) -> float:
    """Epochs the phases from ``since`` to a landed precommit take (by the farm profile)."""
    todo = TICKET_PHASES[TICKET_PHASES.index(since) :]
    return sum(settings.phase_seconds.get(p.value, 0.0) for p in todo) / EPOCH_SECONDS


def _lasts_until(ticket: Randomness, max_age: int) -> int:
    return ticket.epoch + max_age


def compute(ctx: PhaseContext) -> dict[str, Any]:
    """A phase that is the backend's computation and nothing else (PC2, C1, C2)."""
    return ctx.outputs(ctx.compute())


def pre_committing(ctx: PhaseContext) -> dict[str, Any]:
    settings, sector = ctx.runtime.settings, ctx.sector
    assert sector.ticket is not None
    expiry = _lasts_until(sector.ticket, settings.max_ticket_age)
    if ctx.runtime.chain.head() > expiry:
        raise PhaseError(
            f"{sector.id}: ticket expired at epoch {expiry} before precommit", retry=False
        )
    params = sector.outputs["PreCommit2"]["precommit_params"]
    cid, landed = send_and_wait(ctx, "precommit", params)
    deadline = landed + MAX_PROVE_COMMIT_EPOCHS
    seed_epoch = landed + settings.precommit_challenge_delay
    return {
        "deadlines": {"prove_commit": deadline},
        "deadline_epoch": deadline,
        **ctx.outputs({"cid": cid, "epoch": landed, "seed_epoch": seed_epoch}),
    }


def send_and_wait(ctx: PhaseContext, kind: MessageKind, params: str) -> tuple[str, int]:
    """Send the sector's message once (recorded before waiting), wait until it lands."""
    chain, sector = ctx.runtime.chain, ctx.sector
    sent = sector.outputs.get(ctx.phase.value, {}).get("cid")
    message = Message(cid=sent, sector_id=sector.id, kind=kind) if sent else None
    if message is None:
        message = chain.submit(kind, sector.id, params)
        ctx.keeper.checkpoint(ctx.outputs({"cid": message.cid}))
    poll_s = max(MIN_POLL_S, ctx.runtime.settings.wall_seconds(EPOCH_SECONDS))
    while not ctx.keeper.cancelled.is_set():
        try:
            landed = chain.landed(message)
        except ChainError as exc:
            raise PhaseError(str(exc), retry=True) from None
        if landed is not None:
            return message.cid, landed
        time.sleep(poll_s)
    raise PhaseError(f"{sector.id}: stopped while waiting for {kind}", retry=True)


def seed_wait_s(runtime: Runtime, seed_epoch: int) -> float:
    """Wall seconds until a seed of ``seed_epoch`` may be used (0 once it may: past the
    epoch plus ``seed_confidence``), at most ``SEED_POLL_MAX_S``: a WaitSeed message sent
    with this delay finds its seed ready."""
    ready = seed_epoch + runtime.settings.seed_confidence
    epochs_left = ready - runtime.chain.head()
    wait_s = runtime.settings.wall_seconds(max(0, epochs_left) * EPOCH_SECONDS)
    return min(wait_s, SEED_POLL_MAX_S)


def wait_seed(ctx: PhaseContext) -> dict[str, Any]:
    epoch = ctx.sector.outputs["PreCommitting"]["seed_epoch"]
    value = ctx.runtime.chain.randomness("seed", epoch, ctx.sector.miner)
    return {"seed": Randomness(epoch=epoch, value=value)}


def committing(ctx: PhaseContext) -> dict[str, Any]:
    params = ctx.sector.outputs["Commit2"]["provecommit_params"]
    cid, landed = send_and_wait(ctx, "provecommit", params)
    return {"deadlines": {}, "deadline_epoch": None, **ctx.outputs({"cid": cid, "epoch": landed})}


def finalize(ctx: PhaseContext) -> dict[str, Any]:
    sealed_path = sector_dir(roomiest(ctx.slot.sealed_dirs), ctx.sector.id)
    outputs = ctx.compute(sealed_path=str(sealed_path))
    if ctx.sector.temp_path and Path(ctx.sector.temp_path).exists():
        raise PhaseError(
            f"{ctx.sector.id}: Finalize left {ctx.sector.temp_path} behind", retry=True
        )
    ctx.runtime.scratch.release(ctx.slot.host, ctx.sector.id)
    return {"sealed_path": str(sealed_path), **ctx.outputs(outputs)}


STEPS: dict[SectorState, Callable[[PhaseContext], dict[str, Any]]] = {
    S.ADD_PIECE: add_piece,
    S.PRE_COMMIT_1: pre_commit_1,
    S.PRE_COMMIT_2: compute,
    S.PRE_COMMITTING: pre_committing,
    S.WAIT_SEED: wait_seed,
    S.COMMIT_1: compute,
    S.COMMIT_2: compute,
    S.COMMITTING: committing,
    S.FINALIZE: finalize,
}
