"""The suggested ratio of slots per phase, from measured phase times (or the farm profile).

With ``n`` PC1 slots taking ``t₁`` seconds a sector, the farm starts ``n / t₁`` sectors a
second; a phase taking ``t`` seconds needs ``⌈n · t / t₁⌉`` slots to keep up. With the
slots the farm has, each phase can finish ``slots / t`` sectors a second: the smallest of
those is the bottleneck, and every other phase idles for the rest of its time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sealpool.metrics import PhaseRun, phase_runs
from sealpool.store import WORK_PHASES, SectorState, SectorStore

DAY_S = 86400.0
SLOT_PHASES = tuple(p.value for p in WORK_PHASES if p is not SectorState.WAIT_SEED)


@dataclass(frozen=True)
class PhaseTime:
    """How long a phase takes: p50 and p90 seconds, overall and per host."""

    phase: str
    p50_s: float
    p90_s: float
    samples: int
    source: str
    p50_by_host: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseRatio:
    """One phase's line of the suggestion."""

    phase: str
    p50_s: float
    p90_s: float
    source: str
    suggested_slots: int
    current_slots: int | None
    idle_share: float | None


@dataclass(frozen=True)
class Ratio:
    """Slots per phase that balance the pipeline, and what the current slots give."""

    pc1_slots: int
    phases: list[PhaseRatio]
    bottleneck: str
    sectors_per_day: float


def percentile(values: list[float], share: float) -> float:
    """Linear-interpolated percentile of ``values`` (``share`` in 0..1)."""
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def phase_times(runs: Iterable[PhaseRun], profile_s: Mapping[str, float]) -> dict[str, PhaseTime]:
    """Measured times of completed runs per phase; the profile's for phases never measured."""
    by_phase: dict[str, list[PhaseRun]] = {}
    for run in runs:
        if run.outcome == "complete":
            by_phase.setdefault(run.phase, []).append(run)
    times = {}
    for phase in SLOT_PHASES:
        measured = by_phase.get(phase)
        if not measured:
            seconds = profile_s.get(phase, 0.0)
            times[phase] = PhaseTime(phase, seconds, seconds, 0, "profile")
            continue
        hosts: dict[str, list[float]] = {}
        for run in measured:
            hosts.setdefault(run.host, []).append(run.seconds)
        seconds = [run.seconds for run in measured]
        times[phase] = PhaseTime(
            phase,
            percentile(seconds, 0.5),
            percentile(seconds, 0.9),
            len(seconds),
            "history",
            {host: statistics.median(v) for host, v in hosts.items()},
        )
    return times


def measured_runs(store: SectorStore, sectors: int = 500) -> list[PhaseRun]:
    """Phase runs in the histories of the most recent Proving sectors."""
    ids = store.ids_in_state(SectorState.PROVING)[-sectors:]
    return [run for sector_id in ids for run in phase_runs(sector_id, store.history(sector_id))]


def suggest(
    times: Mapping[str, PhaseTime], pc1_slots: int, current: Mapping[str, int] | None = None
) -> Ratio:
    """The slots that keep up with ``pc1_slots`` PC1 slots, and what ``current`` slots give."""
    pc1_s = times["PreCommit1"].p50_s
    start_rate = pc1_slots / pc1_s if pc1_s else 0.0
    slots = {phase: max(1, math.ceil(start_rate * t.p50_s - 1e-9)) for phase, t in times.items()}
    have = dict(current) if current else slots
    capacity = {
        phase: have.get(phase, 0) / t.p50_s if t.p50_s else math.inf for phase, t in times.items()
    }
    bottleneck = min(capacity, key=lambda phase: capacity[phase])
    rate = capacity[bottleneck]
    rows = [
        PhaseRatio(phase, t.p50_s, t.p90_s, t.source, slots[phase],
                   current.get(phase, 0) if current is not None else None,
                   (1 - rate / capacity[phase]) if current is not None and capacity[phase]
                   else None)
        for phase, t in times.items()
    ]  # fmt: skip
    return Ratio(pc1_slots, rows, bottleneck, rate * DAY_S)
