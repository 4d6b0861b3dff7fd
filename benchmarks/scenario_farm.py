"""The farm of scenario_bench.py, its bound and its figures, the same for every set-up.

Three PC1 hosts — ``pc1-a``; ``pc1-b``, whose phases take 1.5 times as long; ``pc1-c``,
killed halfway through — each with AddPiece 1, PreCommit1 4, PreCommit2 1 and Commit2 1
sharing GPU 0, Commit1 1 and Finalize 1 slots; and a ``chain`` host for the chain messages.
Phase times are drawn from ±30 % of the default ones (seeded). No sealpool import: the
plain-Celery baseline uses this module too.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

PHASE_SECONDS = {  # farm seconds, sealpool's defaults
    "AddPiece": 300.0, "PreCommit1": 3 * 3600.0, "PreCommit2": 15 * 60.0,
    "PreCommitting": 60.0, "Commit1": 30.0, "Commit2": 20 * 60.0, "Committing": 60.0,
    "Finalize": 300.0,
}  # fmt: skip
SEED_WAIT_S = 156 * 30.0  # challenge delay and confidence, farm seconds
SPREAD = 0.3
HOST_FACTOR = {"pc1-b": 1.5}
KILLED = "pc1-c"
PC1_HOST_SLOTS = {"AddPiece": 1, "PreCommit1": 4, "PreCommit2": 1, "Commit1": 1,
                  "Commit2": 1, "Finalize": 1}  # fmt: skip
CHAIN_HOST_SLOTS = {"PreCommitting": 4, "WaitSeed": 16, "Committing": 4}
HOSTS = {"pc1-a": PC1_HOST_SLOTS, "pc1-b": PC1_HOST_SLOTS, KILLED: PC1_HOST_SLOTS,
         "chain": CHAIN_HOST_SLOTS}  # fmt: skip
GPU_PHASES = ("PreCommit2", "Commit2")  # one GPU per PC1 host, shared by the two
GPU_HOSTS = [host for host, slots in HOSTS.items() if all(p in slots for p in GPU_PHASES)]
LOOKAHEAD = 2  # sectors ready beyond the free PC1 slots (sealpool's default), for all set-ups
DEAL_SHARE = 0.4  # deals arrive at this share of the bound's rate; CC sectors fill the rest
AFTER_PC1 = ("PreCommit2", "PreCommitting", "Commit1", "Commit2", "Committing", "Finalize")


def kill_time(t0: float, duration_s: float, kill: bool) -> float:
    """When ``KILLED`` dies: halfway through the run, or never."""
    return t0 + duration_s / 2 if kill else math.inf


def kill_loss(time_scale: float) -> float:
    """Sectors' worth of PC1 work that no scheduler keeping temp data on its host can save
    when ``KILLED`` dies with its PC1 slots busy: half of each running PC1 on average, and
    the PC1s that ended less than a tail before the kill (their sectors need the host's temp
    data until Finalize)."""
    pc1_wall = PHASE_SECONDS["PreCommit1"] * HOST_FACTOR.get(KILLED, 1.0) / time_scale
    return HOSTS[KILLED]["PreCommit1"] * (0.5 + tail_s(time_scale) / pc1_wall)


def pc1_slots() -> int:
    return sum(slots.get("PreCommit1", 0) for slots in HOSTS.values())


def tail_s(time_scale: float) -> float:
    """Wall seconds from a PC1's end to Proving, phases taking their mean time."""
    return (sum(PHASE_SECONDS[p] for p in AFTER_PC1) + SEED_WAIT_S) / time_scale


def warm_up_s(time_scale: float) -> float:
    """Wall seconds before the first sectors can reach Proving on the slow host."""
    slowest = max(HOST_FACTOR.values())
    fill = (PHASE_SECONDS["AddPiece"] + PHASE_SECONDS["PreCommit1"]) * slowest
    return fill / time_scale + tail_s(time_scale)


def capacity(time_scale: float, alive_s: dict[str, float]) -> dict[str, float]:
    """Sectors each phase (PC2 and C2 as one GPU) can finish with each host alive for
    ``alive_s`` wall seconds, every phase taking its mean time times the host's factor."""
    result: dict[str, float] = {}
    for host, seconds in alive_s.items():
        slots, factor = HOSTS[host], HOST_FACTOR.get(host, 1.0)
        for phase, count in slots.items():
            if phase in GPU_PHASES or phase not in PHASE_SECONDS:
                continue
            wall = PHASE_SECONDS[phase] * factor / time_scale
            result[phase] = result.get(phase, 0.0) + count * seconds / wall
        if all(phase in slots for phase in GPU_PHASES):
            gpu = sum(PHASE_SECONDS[p] for p in GPU_PHASES) * factor / time_scale
            result["GPU"] = result.get("GPU", 0.0) + seconds / gpu
    return result


@dataclass
class Run:
    """One run of a phase, in wall seconds since the epoch."""

    sector: str
    phase: str
    host: str
    started: float
    ended: float


@dataclass
class Outcome:
    """What one set-up did in the scenario: its runs and when things happened."""

    t0: float  # the first start
    killed_at: float
    runs: list[Run]
    proving: dict[str, float]  # sector → when it reached Proving
    deal_arrived: dict[str, float]  # deal → when it arrived
    deal_sector: dict[str, str]  # deal → its sector
    cross_host_bytes: int
    extra: dict[str, float] = field(default_factory=dict)


def figures(outcome: Outcome, duration_s: float, time_scale: float) -> dict[str, float]:
    """Throughput against the bound over the window from the warm-up to ``duration_s``,
    deal latency, GPU idle share and cross-host bytes; computed alike for every set-up.

    A sector reaching Proving in the window ended its PC1 a tail earlier, so the bound is
    the capacity of the hosts alive in the window shifted back by that tail. The ceiling is
    the bound less :func:`kill_loss` when the kill falls in that window."""
    start, end = outcome.t0 + warm_up_s(time_scale), outcome.t0 + duration_s
    tail = tail_s(time_scale)
    alive = {host: _alive(host, start - tail, end - tail, outcome.killed_at) for host in HOSTS}
    caps = capacity(time_scale, alive)
    bottleneck = min(caps, key=lambda phase: caps[phase])
    killed_in_window = start - tail <= outcome.killed_at < end - tail
    ceiling = caps[bottleneck] - (kill_loss(time_scale) if killed_in_window else 0.0)
    sealed = sum(1 for at in outcome.proving.values() if start <= at < end)
    latencies = [
        (outcome.proving[sector] - outcome.deal_arrived[deal]) * time_scale / 3600
        for deal, sector in outcome.deal_sector.items()
        if sector in outcome.proving
    ]
    window = end - start
    per_farm_day = 86400 / (window * time_scale)
    return {
        "sealed_in_window": sealed,
        "bound_in_window": round(caps[bottleneck], 1),
        "bound_phase": bottleneck,
        "throughput_per_farm_day": sealed * per_farm_day,
        "bound_per_farm_day": caps[bottleneck] * per_farm_day,
        "throughput_bound_ratio": sealed / caps[bottleneck],
        "ceiling_in_window": round(ceiling, 1),
        "throughput_ceiling_ratio": sealed / ceiling,
        "deals_arrived": len(outcome.deal_arrived),
        "deals_sealed": len(latencies),
        "deal_latency_p50_farm_h": _percentile(latencies, 0.5),
        "deal_latency_p95_farm_h": _percentile(latencies, 0.95),
        "gpu_idle_share": _gpu_idle(outcome, start, end),
        "pc1_busy_share": _pc1_busy(outcome, start - tail, end - tail),
        "pc1_to_proving_p50_s": _percentile(_pc1_to_proving(outcome), 0.5),
        "cross_host_bytes": outcome.cross_host_bytes,
        **outcome.extra,
    }


def _alive(host: str, start: float, end: float, killed_at: float) -> float:
    return max(0.0, (min(end, killed_at) if host == KILLED else end) - start)


def _gpu_idle(outcome: Outcome, start: float, end: float) -> float:
    """Share of the window the live hosts' GPUs ran neither PC2 nor C2 (a run waiting for
    the GPU overlaps the one holding it: each host's runs are merged first)."""
    busy = 0.0
    for host in GPU_HOSTS:
        spans = sorted(
            (max(run.started, start), min(run.ended, end))
            for run in outcome.runs
            if run.host == host and run.phase in GPU_PHASES and run.ended > start
        )
        reach = start
        for began, ended in spans:
            busy += max(0.0, ended - max(began, reach))
            reach = max(reach, ended)
    available = sum(_alive(host, start, end, outcome.killed_at) for host in GPU_HOSTS)
    return 1 - busy / available if available else math.nan


def _pc1_busy(outcome: Outcome, start: float, end: float) -> float:
    """Share of the PC1 slots' time (of the hosts alive) that ran a PC1 to completion."""
    busy = sum(
        max(0.0, min(run.ended, end) - max(run.started, start))
        for run in outcome.runs
        if run.phase == "PreCommit1"
    )
    slots = sum(
        slots.get("PreCommit1", 0) * _alive(host, start, end, outcome.killed_at)
        for host, slots in HOSTS.items()
    )
    return busy / slots if slots else math.nan


def _pc1_to_proving(outcome: Outcome) -> list[float]:
    """Wall seconds from each sealed sector's (last) PC1 end to its Proving."""
    pc1_end = {run.sector: run.ended for run in outcome.runs if run.phase == "PreCommit1"}
    return [at - pc1_end[s] for s, at in outcome.proving.items() if s in pc1_end]


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]
