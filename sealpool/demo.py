"""``sealpool demo``: a whole time-scaled farm on this machine, sealing sectors to Proving.

It starts a private embedded Redis (unless SEALPOOL_REDIS_URL is set), H simulated hosts of
real ``celery worker`` processes, creates N sectors (a third of them deal sectors), seals
them, and measures the run against the bottleneck bound (the smallest of each phase's slots
divided by its phase time). Everything it started is stopped at the end, Ctrl-C included.
A run that finishes keeps its pool (the embedded server's data directory, or its keys under
``SEALPOOL_REDIS_URL``), the workers' logs and the sectors' files to inspect afterwards; an
interrupted or failed one removes them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sealpool import server
from sealpool.backends import SECTOR_BYTES
from sealpool.chain import Chain, SimChain
from sealpool.farm import DEMO_SLOTS, LocalFarm
from sealpool.metrics import PhaseRun, phase_runs
from sealpool.store import PIPELINE, TERMINAL, SectorState
from sealpool.supervisor.ratio import DAY_S, phase_times, suggest

# a batch gathers the sectors of one wave of PC1 slots (2 farm hours, not lotus' 24)
DEMO_BATCHING = {"SEALPOOL_PRECOMMIT_BATCH_WAIT_S": "7200", "SEALPOOL_COMMIT_BATCH_WAIT_S": "7200"}
DEMO_ENV = {"SEALPOOL_TICKET_CONFIDENCE": "10", "SEALPOOL_RETRY_BACKOFF_S": "5", **DEMO_BATCHING}
Progress = Callable[[dict[SectorState, int]], None]


@dataclass
class DemoResult:
    """What a demo run achieved."""

    sectors: int
    hosts: int
    time_scale: float
    sectors_sealed: int
    sectors_failed: int
    cross_host_bytes: int
    elapsed_s: float
    throughput_per_h: float
    bound_per_h: float
    bound_ratio: float
    bottleneck: str
    phase_seconds: dict[str, float] = field(default_factory=dict)
    temp_phase_hosts_consistent: bool = True
    messages_per_sector: float = 0.0  # chain messages pushed per sector proven
    key_prefix: str = ""  # the pool's keys, kept
    data_dir: str | None = None  # the embedded server's, kept; None under SEALPOOL_REDIS_URL
    root: str = ""  # the farm's files and logs, kept


def phase_done_counts(counts: dict[SectorState, dict[str, int]]) -> dict[SectorState, int]:
    """For each work phase, how many sectors have finished it (are in a later state)."""
    in_state = {state: sum(by_kind.values()) for state, by_kind in counts.items()}
    done: dict[SectorState, int] = {}
    for index, phase in enumerate(PIPELINE[1:-1], start=1):
        done[phase] = sum(in_state[later] for later in PIPELINE[index + 1 :])
    return done


def run_demo(
    sectors: int = 20,
    hosts: int = 2,
    time_scale: float = 1000.0,
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> DemoResult:
    """Run the demo farm until every sector is Proving or Failed (or ``timeout_s``)."""
    root = Path(tempfile.mkdtemp(prefix="sealpool-demo-"))
    own_server = not os.environ.get("SEALPOOL_REDIS_URL")
    saved_env = dict(os.environ)
    kept = False
    try:
        url = server.start(root / "redis").url if own_server else os.environ["SEALPOOL_REDIS_URL"]
        pool = f"demo-{uuid.uuid4().hex[:8]}"
        os.environ.update(
            DEMO_ENV,
            SEALPOOL_REDIS_URL=url,
            SEALPOOL_KEY_PREFIX=pool,
            SEALPOOL_TIME_SCALE=str(time_scale),
        )
        host_names = [f"host{i + 1}" for i in range(hosts)]
        with LocalFarm(pool, host_names, root, env=DEMO_ENV) as farm:
            farm.wait_ready()
            result = _seal(farm, sectors, time_scale, progress, timeout_s)
        result.key_prefix, result.root = pool, str(root)
        result.data_dir = str(root / "redis") if own_server else None
        kept = True
        return result
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if own_server:
            server.stop(root / "redis")
        if not kept:
            shutil.rmtree(root, ignore_errors=True)


def _seal(
    farm: LocalFarm, count: int, time_scale: float, progress: Progress | None, timeout_s: float
) -> DemoResult:
    from sealpool.deals import sector_per_deal
    from sealpool.runtime import runtime
    from sealpool.sealing_tasks import start

    rt = runtime(farm.pool)
    store = rt.store
    deals = count // 3
    piece = SECTOR_BYTES[rt.settings.sector_size] // 2  # deals of half a sector each
    created = store.create_many(rt.settings.miner, "cc", count - deals, request_id="demo-cc")
    created += sector_per_deal(
        store, rt.settings.miner, range(1, deals + 1), piece, request_id="demo-deal"
    )
    started = time.monotonic()
    for sector in created:
        start(store, sector.id, actor="demo")
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        counts = store.counts()
        if progress:
            progress(phase_done_counts(counts))
        if sum(sum(counts[state].values()) for state in TERMINAL) >= count:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    final = store.get_many(s.id for s in created)
    runs = [run for s in final for run in phase_runs(s.id, store.history(s.id))]
    sealed = sum(1 for s in final if s.state is SectorState.PROVING)
    # The bound: the phase whose slots (on every host) finish the fewest sectors a second.
    slots = {phase.value: count * len(farm.hosts) for phase, count in farm.slots.items()}
    bound = suggest(phase_times([], rt.settings.wall_phase_seconds), slots["PreCommit1"], slots)
    rate, bottleneck = bound.sectors_per_day / DAY_S, bound.bottleneck
    throughput = sealed / elapsed if elapsed else 0.0
    return DemoResult(
        sectors=count, hosts=len(farm.hosts), time_scale=time_scale, sectors_sealed=sealed,
        sectors_failed=sum(1 for s in final if s.state is SectorState.FAILED),
        cross_host_bytes=sum(int(out.get("cross_host_bytes", 0)) for s in final
                             for out in s.outputs.values() if isinstance(out, dict)),
        elapsed_s=elapsed, throughput_per_h=throughput * 3600, bound_per_h=rate * 3600,
        bound_ratio=throughput / rate if rate else 0.0, bottleneck=bottleneck,
        phase_seconds=_mean_seconds(runs),
        temp_phase_hosts_consistent=_temp_phases_on_one_host(runs),
        messages_per_sector=messages_per_sector(rt.chain, sealed),
    )  # fmt: skip


def messages_per_sector(chain: Chain, proven: int) -> float:
    """Messages the sim chain was sent per sector proven (0 on another chain)."""
    if not isinstance(chain, SimChain) or not proven:
        return 0.0
    return sum(chain.messages_sent().values()) / proven


def _mean_seconds(runs: list[PhaseRun]) -> dict[str, float]:
    by_phase: dict[str, list[float]] = {}
    for run in runs:
        if run.outcome == "complete":
            by_phase.setdefault(run.phase, []).append(run.seconds)
    return {phase: statistics.fmean(values) for phase, values in by_phase.items()}


def _temp_phases_on_one_host(runs: list[PhaseRun]) -> bool:
    from sealpool.routing import TEMP_PHASES

    temp = {p.value for p in TEMP_PHASES}
    hosts: dict[str, set[str]] = {}
    for run in runs:
        if run.phase in temp:
            hosts.setdefault(run.sector_id, set()).add(run.host)
    return all(len(each) == 1 for each in hosts.values())


__all__ = ["DEMO_SLOTS", "DemoResult", "phase_done_counts", "run_demo"]
