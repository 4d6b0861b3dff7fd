"""Where the supervisor starts a new sector: the host whose next PC1 slot frees soonest.

A sector is bound to the host of its first temp phase (AddPiece), and its PC1 runs there.
Left to whichever AddPiece worker takes it first, a new sector may go to a host whose PC1
slots are all busy for hours, while another host's slot frees in minutes. So the supervisor
names the host: each live PC1 slot frees now (idle) or when its run is expected to end —
its start plus the host's PC1 run time (the median of its slots' last runs in the hour,
else the configured PC1 time); the sectors already heading to a host (in AddPiece, or in
PC1 on no busy slot) take its earliest frees in turn. A CC sector goes where the next
free one comes soonest (the slots never wait), a deal sector where its PC1 would end
soonest (a faster host may be worth a short wait); ties go to the host with the most idle
slots. Only sectors that would run before the new one count as heading: for a deal
sector, the deal sectors (they outrank CC sectors in the queues).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

from sealpool.store import Sector, SectorState
from sealpool.worker_profiles.slots import SlotReport

S = SectorState
TAKING = frozenset({"idle", "busy"})  # slot states that take new work (not paused, lost, …)


def heading_to_pc1(sectors: Iterable[Sector]) -> Counter[str]:
    """Sectors on their way to PC1 (the caller's choice), by the host they are bound to
    ("" for none: the first AddPiece worker to take one binds it)."""
    return Counter(s.host or "" for s in sectors)


def shortfall(idle: Counter[str], heading: Counter[str], lookahead: int) -> int:
    """Sectors to start so that every idle PC1 slot has a sector heading to it, and
    ``lookahead`` more wait beyond the idle slots. A sector heading to a host covers one
    of that host's idle slots; one bound to no host, any host's."""
    short = sum(max(0, count - heading[host]) for host, count in idle.items())
    beyond = sum(max(0, count - idle[host]) for host, count in heading.items() if host)
    unbound = heading[""]
    covered = min(short, unbound)
    return short - covered + max(0, lookahead - beyond - (unbound - covered))


def place(
    slots: Sequence[SlotReport],
    heading: Counter[str],
    now_ms: int,
    pc1_ms: float,
    *,
    soonest_end: bool = False,
) -> str | None:
    """The host to start the next sector on: where a PC1 slot frees soonest, or with
    ``soonest_end`` where the sector's PC1 would end soonest; None when no live host runs
    both AddPiece and PC1 (the sector then goes to the shared AddPiece queue). ``pc1_ms``
    is the PC1 run time expected of a host none of whose slots has finished one yet."""
    pc1 = [s for s in slots if s.phase == S.PRE_COMMIT_1.value and s.state in TAKING]
    hosts = sorted(placeable(slots))
    if not hosts:
        return None
    idle = Counter(s.host for s in pc1 if s.state == "idle")

    def wait_ms(host: str) -> float:
        """Milliseconds until the new sector's PC1 would start (or end) on ``host``."""
        own = [s for s in pc1 if s.host == host]
        runs = [s.last_run_ms for s in own if s.last_run_ms]  # the median of their last runs
        run_ms = statistics.median(runs) if runs else pc1_ms
        frees = sorted(_free_at(s, now_ms, run_ms) for s in own)
        rounds, position = divmod(heading[host], len(frees))
        starts = frees[position] + rounds * run_ms
        return starts + run_ms if soonest_end else starts

    return min(hosts, key=lambda host: (wait_ms(host), -idle[host]))


def placeable(slots: Sequence[SlotReport]) -> set[str]:
    """Hosts a new sector can be bound to: those whose AddPiece and PC1 slots take work."""
    taking = [s for s in slots if s.state in TAKING]
    adders = {s.host for s in taking if s.phase == S.ADD_PIECE.value}
    return adders & {s.host for s in taking if s.phase == S.PRE_COMMIT_1.value}


def _free_at(slot: SlotReport, now_ms: int, run_ms: float) -> float:
    """Milliseconds from now until the slot is expected to take a new sector."""
    if slot.state == "idle" or slot.since_ms is None:
        return 0.0
    return max(0.0, slot.since_ms + run_ms - now_ms)
