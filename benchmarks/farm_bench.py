"""Farm throughput against the bottleneck bound: sealpool beside its ablation.

A time-scaled farm on real Celery worker processes: two PC1 hosts (4 PC1, 1 PC2 slot each)
and a GPU host (2 C2 slots and the chain phases) — 8 PC1, 2 PC2, 2 C2 slots in all. The same
burst of sectors runs through sealpool's set-up and through its ablation — sealpool minus
locality and priority: Celery's defaults (prefetch 4, no host queues, no priorities;
benchmarks/ablation_app.py) — each in a process of its own. The ablation farm's hosts share
one temp directory (as over NFS), since its temp phases move between them. Every phase takes
its time exactly and every sector starts at once, so both sit near the bound: the scenario
where scheduling matters, with a plain-Celery baseline, is benchmarks/scenario_bench.py.

Run: ``python3 benchmarks/farm_bench.py [--sectors 48] [--time-scale 1000] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sealpool.backends import SECTOR_BYTES
from sealpool.deals import sector_per_deal
from sealpool.demo import DEMO_BATCHING, messages_per_sector
from sealpool.store import SectorState, SectorStore

from _server import benchmark_pythonpath, benchmark_redis

S = SectorState
PC1_HOST = {S.ADD_PIECE: 2, S.PRE_COMMIT_1: 4, S.PRE_COMMIT_2: 1, S.COMMIT_1: 1, S.FINALIZE: 1}
GPU_HOST = {S.COMMIT_2: 2, S.PRE_COMMITTING: 2, S.WAIT_SEED: 2, S.COMMITTING: 2}
HOSTS = {"pc1-a": PC1_HOST, "pc1-b": PC1_HOST, "gpu": GPU_HOST}


def slots_per_phase() -> dict[str, int]:
    total: dict[str, int] = {}
    for slots in HOSTS.values():
        for phase, count in slots.items():
            total[phase.value] = total.get(phase.value, 0) + count
    return total


def run_mode(mode: str, sectors: int, time_scale: float) -> dict[str, float]:
    """Seal ``sectors`` on the farm in ``mode`` (this process); the measured figures."""
    if mode == "ablation":
        os.environ["SEALPOOL_HOST_BINDING"] = "false"
        import ablation_app  # noqa: F401  (reconfigures the Celery app before first use)
    from sealpool.farm import LocalFarm
    from sealpool.metrics import phase_runs
    from sealpool.runtime import runtime
    from sealpool.sealing_tasks import start
    from sealpool.supervisor.ratio import DAY_S, phase_times, suggest

    pool = f"farm-{mode}-{uuid.uuid4().hex[:6]}"
    env = {
        **DEMO_BATCHING,  # batching on, as the demo's
        "SEALPOOL_TIME_SCALE": str(time_scale),
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_HOST_BINDING": "true" if mode == "sealpool" else "false",
        "PYTHONPATH": benchmark_pythonpath(),
    }
    os.environ.update(SEALPOOL_KEY_PREFIX=pool, SEALPOOL_TIME_SCALE=str(time_scale))
    rt = runtime(pool)
    store = rt.store
    with tempfile.TemporaryDirectory(prefix="sealpool-farm-") as root:
        farm = LocalFarm(
            pool,
            list(HOSTS),
            Path(root),
            host_slots=HOSTS,
            env=env,
            app_module="sealpool.app" if mode == "sealpool" else "ablation_app",
            shared_temp=mode == "ablation",  # its temp phases move between hosts
        )
        with farm:
            farm.wait_ready()
            created = store.create_many(rt.settings.miner, "cc", sectors - sectors // 3)
            created += sector_per_deal(
                store,
                rt.settings.miner,
                range(1, sectors // 3 + 1),
                SECTOR_BYTES[rt.settings.sector_size] // 2,
            )
            began = time.time()
            for sector in created:
                start(store, sector.id, actor="bench")
            while sum(store.counts()[S.PROVING].values()) < sectors:
                if time.time() - began > 900:
                    raise SystemExit(f"{mode}: not done after 900 s")
                time.sleep(0.2)
    done = store.get_many(s.id for s in created)
    runs = [run for s in done for run in phase_runs(s.id, store.history(s.id))]
    finished = sorted(r.ended_ms / 1000 for r in runs if r.phase == "Finalize")
    first_start = min(r.started_ms for r in runs) / 1000
    # Steady state: from the first completion of the second PC1 wave to the same point of
    # the last full wave, so that fill and drain are left out.
    edge = slots_per_phase()["PreCommit1"]
    steady = (len(finished) - 2 * edge) / (finished[-edge] - finished[edge])
    overall = len(finished) / (finished[-1] - first_start)
    slots = slots_per_phase()
    times = phase_times([], rt.settings.wall_phase_seconds)
    bound = suggest(times, slots["PreCommit1"], slots).sectors_per_day / DAY_S
    span = finished[-1] - first_start
    busy = sum(r.seconds for r in runs if r.phase == "PreCommit1" and r.outcome == "complete")
    latency = {
        kind: [(_sealed_at(store, s.id) - began) for s in done if s.kind == kind]
        for kind in ("deal", "cc")
    }
    cross = [
        sum(int(o.get("cross_host_bytes", 0)) for o in s.outputs.values() if isinstance(o, dict))
        for s in done
    ]
    per_farm_hour = 3600 / time_scale
    return {
        "sectors": sectors,
        "sealed": sum(1 for s in done if s.state is S.PROVING),
        "elapsed_s": span,
        "bound_per_farm_day": bound * per_farm_hour * 24,
        "steady_per_farm_day": steady * per_farm_hour * 24,
        "steady_bound_ratio": steady / bound,
        "overall_bound_ratio": overall / bound,
        "pc1_idle_slot_s": edge * span - busy,
        "deal_mean_latency_s": sum(latency["deal"]) / max(1, len(latency["deal"])),
        "cc_mean_latency_s": sum(latency["cc"]) / max(1, len(latency["cc"])),
        "cross_host_bytes_sim": sum(cross),
        "sectors_reading_across_hosts": sum(1 for b in cross if b),
        "messages_per_sector": messages_per_sector(
            rt.chain, sum(s.state is S.PROVING for s in done)
        ),
    }


def _sealed_at(store: SectorStore, sector_id: str) -> float:
    """Wall time (s) at which the sector reached Proving."""
    history = store.history(sector_id)
    return next(h.at_ms for h in reversed(history) if h.to_state == "Proving") / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sectors", type=int, default=48)
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--mode", choices=["sealpool", "ablation"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    waves = 2 * slots_per_phase()["PreCommit1"]
    if options.sectors <= waves:  # steady state is measured between the first and last wave
        parser.error(f"--sectors must be more than {waves} (two waves of PC1 slots)")
    if options.mode:  # a child run: one mode, figures as JSON
        print(json.dumps(run_mode(options.mode, options.sectors, options.time_scale)))
        return
    results = {}
    with benchmark_redis() as url:
        for mode in ("sealpool", "ablation"):
            child = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--sectors", str(options.sectors),
                 "--time-scale", str(options.time_scale)],
                env={**os.environ, "SEALPOOL_REDIS_URL": url}, capture_output=True, text=True,
                check=True)  # fmt: skip
            results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    if options.json:
        print(json.dumps(results, indent=2))
        return
    table = Table(
        title=f"farm throughput, {options.sectors} sectors, time scale "
        f"{options.time_scale:g} (8 PC1, 2 PC2, 2 C2 slots on 3 hosts)"
    )
    table.add_column("figure")
    for mode in results:
        table.add_column(mode, justify="right")
    for name in results["sealpool"]:
        table.add_row(name, *(f"{results[m][name]:,.3f}" for m in results))
    table.caption = (
        "cross-host bytes are the sim's small files; in a 32 GiB farm each sector "
        "reading across hosts moves its layers, hundreds of GiB"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
