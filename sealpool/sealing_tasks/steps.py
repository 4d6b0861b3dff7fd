"""What each phase does between its claim and its completion.

Each step gets a :class:`PhaseContext` and returns the fields to store with the completion.
Steps raise PhaseError for failures the runner retries or records.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sealpool.backends import SECTOR_BYTES, PhaseRequest, Slot
from sealpool.backends.base import check_sealed
from sealpool.chain import Receipt
from sealpool.chain.commitments import SEALED, UNSEALED, parse_commitment
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    PROVE_COMMIT_SECTORS3,
    Activation,
    Piece,
    PreCommit,
    encode_precommits,
    encode_prove_commits,
)
from sealpool.chain.policy import (
    MESSAGE_CONFIDENCE,
    SEAL_PROOF,
    expiration,
    prove_commit_deadline,
    seed_epoch,
    ticket_expiry,
    ticket_work_epochs,
)
from sealpool.config import EPOCH_SECONDS
from sealpool.errors import ChainError, PhaseError
from sealpool.paths import overlap, sector_dir_in
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import Runtime
from sealpool.scratch_lease import stamp_scratch
from sealpool.sealing_tasks.lease_keeper import LeaseKeeper
from sealpool.storage import roomiest, sector_dir
from sealpool.store import Randomness, Sector, SectorState

S = SectorState
RETRYABLE_EXIT_CODES = frozenset({6, 7, 19})  # funds or gas: the same message may pass later
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
    settings, chain, sector = ctx.runtime.settings, ctx.runtime.chain, ctx.sector
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
    """PreCommitSectorBatch2 of the sector, with its deposit; once it landed, the seed
    epoch and prove-commit deadline from the on-chain PreCommitEpoch."""
    settings, sector, chain = ctx.runtime.settings, ctx.sector, ctx.runtime.chain
    assert sector.ticket is not None
    expiry = ticket_expiry(sector.ticket.epoch, settings.max_ticket_age)
    head = chain.head()
    if head + 1 > expiry:
        raise PhaseError(
            f"{sector.id}: ticket expired at epoch {expiry} before precommit", retry=False
        )
    precommit = _precommit_of(ctx, head)
    deposit = chain.precommit_deposit(precommit)
    receipt = send_and_wait(ctx, PRE_COMMIT_SECTOR_BATCH2, encode_precommits([precommit]), deposit)
    epoch = chain.precommit_epoch(sector.number)
    if epoch is None:
        raise PhaseError(f"{sector.id}: precommit {receipt.cid} landed, none on chain", retry=True)
    deadline = prove_commit_deadline(epoch)
    seed = seed_epoch(epoch, settings.precommit_challenge_delay)
    outputs = {
        "cid": receipt.cid, "epoch": epoch, "expiration": precommit.expiration,
        "deposit": str(deposit), "seed_epoch": seed,
    }  # fmt: skip
    return {
        "deadlines": {"prove_commit": deadline},
        "deadline_epoch": deadline,
        **ctx.outputs(outputs),
    }


def _precommit_of(ctx: PhaseContext, head: int) -> PreCommit:
    """The sector's SectorPreCommitInfo: CommR and (deal sectors) CommD from PreCommit2."""
    sector, settings = ctx.sector, ctx.runtime.settings
    assert sector.ticket is not None
    sealed = sector.outputs["PreCommit2"]
    try:
        comm_r = parse_commitment(SEALED, sealed["comm_r"])
        comm_d = parse_commitment(UNSEALED, sealed["comm_d"]) if sector.deal_ids else None
    except (KeyError, ValueError) as exc:
        why = f"{sector.id}: PreCommit2 gave no usable CommR/CommD: {exc}"
        raise PhaseError(why, retry=False) from None
    return PreCommit(
        seal_proof=SEAL_PROOF[settings.sector_size], number=sector.number, comm_r=comm_r,
        ticket_epoch=sector.ticket.epoch, expiration=expiration(head, sector.ticket.epoch),
        comm_d=comm_d,
    )  # fmt: skip


def send_and_wait(ctx: PhaseContext, method: int, params: bytes, value: int) -> Receipt:
    """Send the phase's message once, wait until it landed ``MESSAGE_CONFIDENCE`` deep.

    The intent (a MsgUuid) is recorded with the lease before the push and the CID after
    it: a phase retried after a crash pushes the same MsgUuid again, which the node answers
    with the message already sent. A message that failed on chain is forgotten, so the
    next attempt sends a new one.
    """
    chain, sector = ctx.runtime.chain, ctx.sector
    mine = sector.outputs.get(ctx.phase.value, {})
    cid, intent = mine.get("cid"), mine.get("uuid") or str(uuid.uuid4())
    try:
        if cid is None:
            ctx.keeper.checkpoint(ctx.outputs({"uuid": intent}))
            cid = chain.push(method, params, value, intent)
            ctx.keeper.checkpoint(ctx.outputs({"uuid": intent, "cid": cid}))
        poll_s = max(MIN_POLL_S, ctx.runtime.settings.wall_seconds(EPOCH_SECONDS))
        while not ctx.keeper.cancelled.is_set():
            receipt = chain.search(cid)
            if receipt is not None and chain.head() >= receipt.height + MESSAGE_CONFIDENCE:
                break
            time.sleep(poll_s)
        else:
            raise PhaseError(f"{sector.id}: stopped while waiting for {cid}", retry=True)
    except ChainError as exc:
        raise PhaseError(str(exc), retry=True) from None
    if receipt.exit_code != 0:
        ctx.keeper.checkpoint(ctx.outputs({"failed": receipt.cid}))
        raise PhaseError(
            f"{sector.id}: message {receipt.cid} (method {method}) failed on chain: "
            f"exit code {receipt.exit_code}",
            retry=receipt.exit_code in RETRYABLE_EXIT_CODES,
        )
    return receipt


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
    """ProveCommitSectors3 of the sector's proof, paying its pledge less its deposit."""
    sector, chain, settings = ctx.sector, ctx.runtime.chain, ctx.runtime.settings
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
    params = encode_prove_commits([Activation(sector.number, proof, pieces)])
    pledge = chain.initial_pledge(size, precommitted["expiration"] - chain.head())
    value = max(0, pledge - int(precommitted["deposit"]))
    receipt = send_and_wait(ctx, PROVE_COMMIT_SECTORS3, params, value)
    outputs = {"cid": receipt.cid, "epoch": receipt.height - 1}
    return {"deadlines": {}, "deadline_epoch": None, **ctx.outputs(outputs)}


def finalize(ctx: PhaseContext) -> dict[str, Any]:
    """The backend copies the sealed file and cache to a sealed directory; they are checked
    there (sizes, the sealed file's sha256) before the scratch is removed and the sector
    may leave Finalize."""
    sector, what = ctx.sector, f"Finalize of {ctx.sector.id}"
    sealed_path = sector_dir(roomiest(ctx.slot.sealed_dirs), sector.id)
    temp = Path(sector.temp_path).resolve() if sector.temp_path else None
    if temp and overlap(temp, sealed_path):
        raise PhaseError(
            f"{what}: sealed path {sealed_path} overlaps the scratch {temp}: temp and sealed "
            "directories must be apart",
            retry=False,
        )
    if temp and temp.exists() and sector_dir_in(temp, ctx.slot.temp_dirs, sector.id) is None:
        raise PhaseError(
            f"{what}: scratch {temp} is not <temp dir>/{sector.id} under this slot's temp dirs: "
            "it would not be removed",
            retry=False,
        )
    outputs = _copied_before(ctx)
    if outputs is None:
        outputs = {**ctx.compute(sealed_path=str(sealed_path)), "sealed_path": str(sealed_path)}
        check_sealed(sealed_path, outputs, what)
        ctx.keeper.checkpoint(ctx.outputs(outputs))  # recorded before the scratch goes
    else:
        sealed_path = Path(outputs["sealed_path"])
        check_sealed(sealed_path, outputs, what)
    if temp and temp.exists():
        shutil.rmtree(temp)  # checked: this sector's directory under a temp root
    ctx.runtime.scratch.release(ctx.slot.host, sector.id)
    return {"sealed_path": str(sealed_path), **ctx.outputs(outputs)}


def _copied_before(ctx: PhaseContext) -> dict[str, Any] | None:
    """The outputs of an earlier attempt of this Finalize that copied and checked the
    sealed files under one of the slot's sealed directories, then stopped before
    completing (its scratch may be gone already): this attempt only checks them again."""
    earlier = ctx.sector.outputs.get(S.FINALIZE.value, {})
    copied = sector_dir_in(earlier.get("sealed_path", ""), ctx.slot.sealed_dirs, ctx.sector.id)
    return earlier if copied else None


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
