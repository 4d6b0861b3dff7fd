"""Where the supervisor starts a new sector: the host whose PC1 slots need it most.

A sector is bound to the host of its first temp phase (AddPiece), and its PC1 runs there.
Left to whichever AddPiece worker takes it first, a new sector may go to a host whose PC1
slots are all busy, while another host's PC1 slots idle until the next start. So the
supervisor names the host: the one with the most idle PC1 slots beyond the sectors already
on their way to them (in AddPiece, or queued for PC1); ties go to the most idle slots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from sealpool.store import PhaseStatus, Sector, SectorState
from sealpool.worker_profiles.slots import SlotReport

S = SectorState
TAKING = frozenset({"idle", "busy"})  # slot states that take new work (not paused, lost, …)


def heading_to_pc1(sectors: Iterable[Sector]) -> Counter[str]:
    """Sectors bound to each host that are in AddPiece or queued for PC1."""
    return Counter(s.host for s in sectors if s.host and _heading(s))


def _heading(sector: Sector) -> bool:
    queued = sector.status is PhaseStatus.QUEUED
    return sector.state is S.ADD_PIECE or (sector.state is S.PRE_COMMIT_1 and queued)


def place(slots: Sequence[SlotReport], heading: Counter[str]) -> str | None:
    """The host to start the next sector on; None when no live host runs both AddPiece
    and PC1 (the sector then goes to the shared AddPiece queue)."""
    pc1 = [s for s in slots if s.phase == S.PRE_COMMIT_1.value and s.state in TAKING]
    idle = Counter(s.host for s in pc1 if s.state == "idle")
    adders = {s.host for s in slots if s.phase == S.ADD_PIECE.value and s.state in TAKING}
    hosts = adders & {s.host for s in pc1}
    if not hosts:
        return None
    return max(sorted(hosts), key=lambda host: (idle[host] - heading[host], idle[host]))
