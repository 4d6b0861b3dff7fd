"""Redis-backed sector pool: the record, the state machine and the only writer of state."""

from sealpool.store.history import HistoryPolicy
from sealpool.store.model import Randomness, Sector, SectorKind, parse_sector_id
from sealpool.store.pool import KINDS, Claim, HistoryEntry, Lease, SectorStore
from sealpool.store.states import (
    PIPELINE,
    TERMINAL,
    WORK_PHASES,
    PhaseStatus,
    SectorState,
    allowed_sources,
    next_state,
)

__all__ = [
    "KINDS",
    "PIPELINE",
    "TERMINAL",
    "WORK_PHASES",
    "Claim",
    "HistoryEntry",
    "HistoryPolicy",
    "Lease",
    "PhaseStatus",
    "Randomness",
    "Sector",
    "SectorKind",
    "SectorState",
    "SectorStore",
    "allowed_sources",
    "next_state",
    "parse_sector_id",
]
