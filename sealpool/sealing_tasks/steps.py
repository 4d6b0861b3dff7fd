"""What each phase does between its claim and its completion.

Each step gets a :class:`PhaseContext` and returns the fields to store with the completion.
Steps raise PhaseError for failures the runner retries or records.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sealpool.backends import SECTOR_BYTES, PhaseRequest, Slot
from sealpool.backends.base import check_sealed
from sealpool.chain import Chain
from sealpool.chain.batching import (
    RETRYABLE_EXIT_CODES,
    Member,
    activation_entry,
    precommit_entry,
)
from sealpool.chain.commitments import SEALED, UNSEALED, parse_commitment
from sealpool.chain.messages import Activation, Piece, PreCommit
from sealpool.chain.policy import (
    EPOCHS_PER_DAY,
    SEAL_PROOF,
    expiration,
    prove_commit_deadline,
    ticket_expiry,
    ticket_work_epochs,
)
from sealpool.config import EPOCH_SECONDS
from sealpool.errors import ChainError, PhaseError
from sealpool.paths import overlap, sector_dir_in
from sealpool.proving_layout import SectorFiles, declare_store, find_sector_files, sector_files
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import Runtime
from sealpool.scratch_lease import stamp_scratch
from sealpool.sealing_tasks import batched
from sealpool.sealing_tasks.lease_keeper import LeaseKeeper
from sealpool.storage import roomiest
from sealpool.store import Randomness, Sector, SectorState

S = SectorState
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

    @property
    def chain(self) -> Chain:
        """The chain as the sector's miner actor sees it."""
        return self.runtime.chain_for(self.sector.miner)

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
        temp_dirs = self.slot.temp_dirs
        if self.phase in TEMP_PHASES and (
            scratch := sector_dir_in(request.temp_path, temp_dirs, sector.id)
        ):
            stamp_scratch(scratch, request.token, f"{self.phase} of {sector.id}")
        return self.runtime.backend.run(request, self.slot, self.keeper.cancelled)


def add_piece(ctx: PhaseContext) -> dict[str, Any]:
    temp_path = str(ctx.runtime.reserve_scratch(ctx.sector.id, ctx.slot))
    return {"temp_path": temp_path, **ctx.outputs(ctx.compute(temp_path=temp_path))}


def pre_commit_1(ctx: PhaseContext) -> dict[str, Any]:
    ticket = usable_ticket(ctx)
    outputs = ctx.compute(ticket=ticket.model_dump())
    expiry = ticket_expiry(ticket.epoch, ctx.runtime.settings.max_ticket_age)
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
    settings, chain, sector = ctx.runtime.settings, ctx.chain, ctx.sector
    head = chain.head()
    needed = ticket_work_epochs(settings)
    ticket = sector.ticket
    if ticket is None or (
        ticket_expiry(ticket.epoch, settings.max_ticket_age) < head + needed
        and settings.expired_ticket == "reticket"
    ):
        epoch = head - settings.ticket_confidence
        ticket = Randomness(epoch=epoch, value=chain.randomness("ticket", epoch, sector.miner))
    expiry = ticket_expiry(ticket.epoch, settings.max_ticket_age)
    if expiry < head + needed:
        raise PhaseError(
            f"{sector.id}: ticket of epoch {ticket.epoch} expires at {expiry}, but PC1, PC2 and "
            f"precommit need until epoch {head + int(needed)}: PC1 not started",
            retry=False,
        )
    return ticket


def compute(ctx: PhaseContext) -> dict[str, Any]:
    """A phase that is the backend's computation and nothing else (PC2, C1, C2)."""
    return ctx.outputs(ctx.compute())


def pre_committing(ctx: PhaseContext) -> dict[str, Any]:
    """Enroll the sector's SectorPreCommitInfo, with its deposit, in a precommit batch and
    park it there; once the batch landed, the seed epoch and prove-commit deadline from the
    on-chain PreCommitEpoch (see :mod:`sealpool.sealing_tasks.batched`)."""
    settings, sector, chain = ctx.runtime.settings, ctx.sector, ctx.chain
    assert sector.ticket is not None
    member = batched.book(ctx.runtime).member(sector.id)
    if member is None:
        expiry = ticket_expiry(sector.ticket.epoch, settings.max_ticket_age)
        head = chain.head()
        if head + 1 > expiry:
            raise PhaseError(
                f"{sector.id}: ticket expired at epoch {expiry} before precommit", retry=False
            )
        precommit = _precommit_of(ctx, head)
        deposit = chain.precommit_deposit(precommit)
        entry = precommit_entry(precommit)
        member = Member(sector.id, "precommit", sector.miner, entry, deposit, cutoff=expiry)
    return _in_batch(ctx, member)


def _in_batch(ctx: PhaseContext, member: Member) -> dict[str, Any]:
    """Enroll ``member`` (its intent recorded first, so the supervisor never re-tickets a
    sector whose precommit may be sent), then: its completion if the batch landed, a
    PhaseError if it failed, else park the sector."""
    runtime, sector = ctx.runtime, ctx.sector
    book = batched.book(runtime)
    if not member.batch:
        ctx.keeper.checkpoint(ctx.outputs({"batch": "enrolling"}))
        member = book.enroll(member, ctx.chain.head())
        ctx.keeper.checkpoint(ctx.outputs({"batch": member.batch}))
    batched.pump(runtime, ctx.keeper.lease.worker)
    member = book.member(sector.id) or member
    if member.outcome == "landed":
        try:
            updates = batched.landed_updates(runtime, sector, member)
        except ChainError as exc:
            raise PhaseError(str(exc), retry=True) from None
        book.forget(sector.id)
        return updates
    if member.outcome == "failed":
        ctx.keeper.checkpoint(ctx.outputs({"failed": member.cid, "exit_code": member.exit_code}))
        book.forget(sector.id)  # the next attempt enrolls anew: a new message
        raise PhaseError(
            f"{sector.id}: {member.reason}", retry=member.exit_code in RETRYABLE_EXIT_CODES
        )
    batched.ensure_pump(runtime, ctx.keeper.lease.worker)
    raise batched.Parked(f"in batch {member.batch}", batched.park_delay_s(runtime, member.kind))


def _precommit_of(ctx: PhaseContext, head: int) -> PreCommit:
    """The sector's SectorPreCommitInfo: CommR and (deal sectors) CommD from PreCommit2."""
    sector, settings = ctx.sector, ctx.runtime.settings
    assert sector.ticket is not None
    lifetime = settings.cc_lifetime_days * EPOCHS_PER_DAY
    sealed = sector.outputs["PreCommit2"]
    try:
        comm_r = parse_commitment(SEALED, sealed["comm_r"])
        comm_d = parse_commitment(UNSEALED, sealed["comm_d"]) if sector.deal_ids else None
    except (KeyError, ValueError) as exc:
        why = f"{sector.id}: PreCommit2 gave no usable CommR/CommD: {exc}"
        raise PhaseError(why, retry=False) from None
    return PreCommit(
        seal_proof=SEAL_PROOF[settings.sector_size], number=sector.number, comm_r=comm_r,
        ticket_epoch=sector.ticket.epoch, comm_d=comm_d,
        expiration=expiration(head, sector.ticket.epoch, lifetime),
    )  # fmt: skip


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
    value = ctx.chain.randomness("seed", epoch, ctx.sector.miner)
    return {"seed": Randomness(epoch=epoch, value=value)}


def committing(ctx: PhaseContext) -> dict[str, Any]:
    """Enroll the sector's proof in a prove-commit batch, paying its pledge less its
    deposit, and park it there; once the batch landed, the sector is proven."""
    sector, chain, settings = ctx.sector, ctx.chain, ctx.runtime.settings
    member = batched.book(ctx.runtime).member(sector.id)
    if member is None:
        precommitted = sector.outputs["PreCommitting"]
        try:
            proof = bytes.fromhex(sector.outputs["Commit2"]["proof"])
        except (KeyError, ValueError) as exc:
            why = f"{sector.id}: Commit2 gave no proof bytes: {exc}"
            raise PhaseError(why, retry=False) from None
        size = SECTOR_BYTES[settings.sector_size]
        pieces: tuple[Piece, ...] = ()
        if sector.deal_ids:  # one piece of the sector's CommD
            comm_d = parse_commitment(UNSEALED, sector.outputs["PreCommit2"]["comm_d"])
            pieces = (Piece(cid=comm_d, size=size),)
        pledge = chain.initial_pledge(size, precommitted["expiration"] - chain.head())
        value = max(0, pledge - int(precommitted["deposit"]))
        entry = activation_entry(Activation(sector.number, proof, pieces))
        cutoff = sector.deadlines.get("prove_commit", prove_commit_deadline(precommitted["epoch"]))
        member = Member(sector.id, "commit", sector.miner, entry, value, cutoff=cutoff)
    return _in_batch(ctx, member)


def finalize(ctx: PhaseContext) -> dict[str, Any]:
    """The backend copies the sealed file and cache into a lotus storage path (a sealed
    directory); they are checked there (sizes, the sealed file's sha256, the cache files
    lotus proves with) before the scratch is removed and the sector may leave Finalize."""
    sector, what = ctx.sector, f"Finalize of {ctx.sector.id}"
    files = sector_files(roomiest(ctx.slot.sealed_dirs), sector.miner, sector.number)
    temp = Path(sector.temp_path).resolve() if sector.temp_path else None
    if temp and overlap(temp, files.root):
        raise PhaseError(
            f"{what}: sealed path {files.root} overlaps the scratch {temp}: temp and sealed "
            "directories must be apart",
            retry=False,
        )
    if temp and temp.exists() and sector_dir_in(temp, ctx.slot.temp_dirs, sector.id) is None:
        raise PhaseError(
            f"{what}: scratch {temp} is not <temp dir>/{sector.id} under this slot's temp dirs: "
            "it would not be removed",
            retry=False,
        )
    size = SECTOR_BYTES[ctx.runtime.settings.sector_size]
    if copied := _copied_before(ctx):
        files, outputs = copied
        check_sealed(files, size, outputs, what)
    else:
        declare_store(files.root)
        paths = {"sealed_path": str(files.sealed), "cache_path": str(files.cache)}
        outputs = {**ctx.compute(**paths), **paths}
        check_sealed(files, size, outputs, what)
        ctx.keeper.checkpoint(ctx.outputs(outputs))  # recorded before the scratch goes
    if temp and temp.exists():
        shutil.rmtree(temp)  # checked: this sector's directory under a temp root
    ctx.runtime.scratch.release(ctx.slot.host, sector.id)
    return {"sealed_path": str(files.sealed), **ctx.outputs(outputs)}


def _copied_before(ctx: PhaseContext) -> tuple[SectorFiles, dict[str, Any]] | None:
    """The files and outputs of an earlier attempt of this Finalize that copied and checked
    the sealed files into one of the slot's sealed directories, then stopped before
    completing (its scratch may be gone already): this attempt only checks them again."""
    sector, earlier = ctx.sector, ctx.sector.outputs.get(S.FINALIZE.value, {})
    sealed = earlier.get("sealed_path", "")
    files = find_sector_files(sealed, ctx.slot.sealed_dirs, sector.miner, sector.number)
    return (files, earlier) if files else None


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
