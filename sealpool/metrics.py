"""Figures computed from sectors' histories: how long each phase ran, and where."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sealpool.store import HistoryEntry

LEASE_ENDS = frozenset({"complete", "retry", "fail", "release"})


@dataclass(frozen=True)
class PhaseRun:
    """One claimed run of a phase, from its claim to the event that ended its lease."""

    sector_id: str
    phase: str
    worker: str
    host: str
    started_ms: int
    ended_ms: int
    outcome: str

    @property
    def seconds(self) -> float:
        return (self.ended_ms - self.started_ms) / 1000


def phase_runs(sector_id: str, history: Iterable[HistoryEntry]) -> list[PhaseRun]:
    """The runs in one sector's history; the host is the worker id's part before ``:``."""
    runs: list[PhaseRun] = []
    open_claim: HistoryEntry | None = None
    for entry in history:
        if entry.event == "claim":
            open_claim = entry
        elif open_claim and entry.event in LEASE_ENDS and entry.actor == open_claim.actor:
            runs.append(
                PhaseRun(
                    sector_id,
                    open_claim.from_state,
                    open_claim.actor,
                    open_claim.actor.partition(":")[0],
                    open_claim.at_ms,
                    entry.at_ms,
                    entry.event,
                )
            )
            open_claim = None
    return runs
