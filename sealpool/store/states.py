"""The sector state machine: which states exist and which moves between them are legal.

A sector walks the sealing pipeline one state at a time::

    Pending → AddPiece → PreCommit1 → PreCommit2 → PreCommitting → WaitSeed
            → Commit1 → Commit2 → Committing → Finalize → Proving

Every state between ``Pending`` and ``Proving`` is a *work phase*: while a sector is in one,
its :class:`PhaseStatus` says whether the phase waits in a queue or runs under a lease.
``Failed`` and ``Aborted`` can be reached from any live state. Besides the forward steps an
operator (or the supervisor) may send a sector back: a failed sector is resumed at a work
phase, a sector whose ticket runs out redoes PreCommit1 with a fresh ticket, and a sector
whose host is lost (its temp data with it) restarts at AddPiece — but only before its
precommit could have been sent: after that, a new ticket would orphan the precommit and its
deposit. A move to the state a sector is already in is only made against the version (or
lease) the caller read, so two actors can't both make it.
"""

from __future__ import annotations

from enum import Enum


class SectorState(str, Enum):
    """Where a sector is in the sealing pipeline."""

    PENDING = "Pending"
    ADD_PIECE = "AddPiece"
    PRE_COMMIT_1 = "PreCommit1"
    PRE_COMMIT_2 = "PreCommit2"
    PRE_COMMITTING = "PreCommitting"
    WAIT_SEED = "WaitSeed"
    COMMIT_1 = "Commit1"
    COMMIT_2 = "Commit2"
    COMMITTING = "Committing"
    FINALIZE = "Finalize"
    PROVING = "Proving"
    FAILED = "Failed"
    ABORTED = "Aborted"

    @classmethod
    def parse(cls, text: str) -> SectorState:
        """The state named ``text`` (case-insensitive), or ValueError listing the names."""
        for state in cls:
            if state.value.lower() == text.lower():
                return state
        names = ", ".join(state.value for state in cls)
        raise ValueError(f"unknown state {text!r}; expected one of: {names}")

    def __str__(self) -> str:
        return self.value


class PhaseStatus(str, Enum):
    """Whether a work phase waits for a worker or runs on one."""

    QUEUED = "queued"
    RUNNING = "running"

    def __str__(self) -> str:
        return self.value


PIPELINE: tuple[SectorState, ...] = (
    SectorState.PENDING,
    SectorState.ADD_PIECE,
    SectorState.PRE_COMMIT_1,
    SectorState.PRE_COMMIT_2,
    SectorState.PRE_COMMITTING,
    SectorState.WAIT_SEED,
    SectorState.COMMIT_1,
    SectorState.COMMIT_2,
    SectorState.COMMITTING,
    SectorState.FINALIZE,
    SectorState.PROVING,
)
WORK_PHASES: tuple[SectorState, ...] = PIPELINE[1:-1]
TERMINAL: frozenset[SectorState] = frozenset(
    {SectorState.PROVING, SectorState.FAILED, SectorState.ABORTED}
)
LIVE: tuple[SectorState, ...] = PIPELINE[:-1]

RETICKET_FROM = (SectorState.PRE_COMMIT_1, SectorState.PRE_COMMIT_2, SectorState.PRE_COMMITTING)
# No precommit message exists yet in these states: restarting them from AddPiece (a new
# ticket) costs work, never a deposit.
RESTART_FROM = (SectorState.ADD_PIECE, SectorState.PRE_COMMIT_1, SectorState.PRE_COMMIT_2)


def next_state(state: SectorState) -> SectorState:
    """The pipeline state after ``state``; ValueError past the end or off the pipeline."""
    if state not in PIPELINE[:-1]:
        raise ValueError(f"{state} has no next state")
    return PIPELINE[PIPELINE.index(state) + 1]


def allowed_sources(target: SectorState) -> frozenset[SectorState]:
    """Every state from which a sector may move to ``target``."""
    sources: set[SectorState] = set()
    if target in PIPELINE[1:]:
        sources.add(PIPELINE[PIPELINE.index(target) - 1])
    if target in (SectorState.FAILED, SectorState.ABORTED):
        sources.update(LIVE)
        if target is SectorState.ABORTED:
            sources.add(SectorState.FAILED)
    if target in WORK_PHASES:
        sources.add(SectorState.FAILED)
    if target is SectorState.PRE_COMMIT_1:
        sources.update(RETICKET_FROM)
    if target is SectorState.ADD_PIECE:
        sources.update(RESTART_FROM)
    return frozenset(sources)


def status_on_entry(state: SectorState) -> PhaseStatus | None:
    """A sector entering a work phase waits in its queue; other states carry no status."""
    return PhaseStatus.QUEUED if state in WORK_PHASES else None
