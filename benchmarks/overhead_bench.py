"""sealpool's own overhead: sectors through every phase with a zero-duration backend.

One simulated host of real ``sealpool worker`` processes (4 slots per phase, 16 for the two
chain messages, which wait an epoch for landing), every phase time 0 and the sim chain at
time scale 1000 (the seed wait, 4.7 s, holds no slot). The sim backend's small files go to
``--root`` (tmpfs by default), so the figures are sealpool's and Celery's costs, not the
disk's. Prints store transitions per second (claims, completions, starts) of a burst of
sectors, the CPU time each kind of process spent per transition meanwhile, and the dispatch
latency — from a phase's message being sent to the phase running (its claim), on a farm
kept lightly loaded (``--in-flight`` sectors at a time, most waiting for their seed) until
``--latency-samples`` dispatches were measured — p50, p95 and p99.

Then Celery's floor on the same machine, twice: with Celery's defaults (prefork, one process
per core, prefetch 4 per process) and with sealpool's settings (one worker process of 4
threads of sealpool's pool, prefetch off) — no-op tasks sent by this process, timed until
every task has *finished* (each counts itself done). Each phase task carries two transitions
(claim, complete), so twice the floor's rate is what sealpool would reach if its own work
cost nothing.

Run: ``python3 benchmarks/overhead_bench.py [--sectors 300] [--latency-samples 1000]
[--root DIR] [--json]``.
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

import psutil
import redis

from sealpool.store import TERMINAL, WORK_PHASES, HistoryEntry, SectorState, SectorStore

from _server import benchmark_pythonpath, benchmark_redis, print_figures

S = SectorState
ZERO = {phase.value: 0.0 for phase in WORK_PHASES}
SAMPLES_PER_SECTOR = 7  # dispatches sent for at once per sector (WaitSeed's is delayed)
FLOORS = {  # the floor's set-ups: the app and the worker's options
    "celery_defaults": ("noop_app:plain", []),
    "sealpool_settings": ("noop_app", ["--concurrency", "4"]),
}
DEFAULT_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def run(sectors: int, root: Path | None, samples: int, in_flight: int) -> dict[str, float]:
    from sealpool.farm import LocalFarm
    from sealpool.runtime import runtime
    from sealpool.sealing_tasks import start
    from sealpool.supervisor.ratio import percentile

    pool = f"overhead-{uuid.uuid4().hex[:6]}"
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_PRECOMMIT_BATCH_WAIT_S": "0",  # every message sent at once
        "SEALPOOL_COMMIT_BATCH_WAIT_S": "0",
        "SEALPOOL_PHASE_SECONDS": json.dumps(ZERO),
    }
    os.environ.update(env, SEALPOOL_KEY_PREFIX=pool)
    store = runtime(pool).store
    slots = {phase: 4 for phase in WORK_PHASES} | {S.PRE_COMMITTING: 16, S.COMMITTING: 16}
    with (
        tempfile.TemporaryDirectory(dir=root) as files,
        LocalFarm(pool, ["host"], Path(files), slots=slots, env=env) as farm,
    ):
        farm.wait_ready()
        meters = {
            "workers": [psutil.Process(p.pid) for p in farm.processes.values()],
            "redis": [psutil.Process(store.client.info("server")["process_id"])],
            "bench": [psutil.Process()],
        }
        cpu_before = {name: _cpu_s(procs) for name, procs in meters.items()}
        created = store.create_many("f01000", "cc", sectors)
        began = time.perf_counter()
        for sector in created:
            start(store, sector.id, actor="bench")
        while sum(sum(store.counts()[state].values()) for state in TERMINAL) < sectors:
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        cpu = {name: _cpu_s(procs) - cpu_before[name] for name, procs in meters.items()}
        light = store.create_many("f01000", "cc", -(-samples // SAMPLES_PER_SECTOR) + 1)
        _trickle(store, [sector.id for sector in light], in_flight)
    transitions = sum(
        1
        for sector in created
        for entry in store.history(sector.id)
        if entry.event in ("claim", "complete", "start")
    )
    latencies = [ms for sector in light for ms in _dispatch_latencies(store.history(sector.id))]
    return {
        "sectors": sectors,
        "sealed": sum(1 for s in store.get_many(s.id for s in created) if s.state is S.PROVING),
        "elapsed_s": elapsed,
        "sectors_per_s": sectors / elapsed,
        "transitions_per_s": transitions / elapsed,
        **{
            f"cpu_ms_per_transition_{name}": 1000 * used / transitions for name, used in cpu.items()
        },
        "cpu_busy_share": sum(cpu.values()) / (elapsed * (os.cpu_count() or 1)),
        "dispatch_latency_samples": len(latencies),
        "dispatch_latency_p50_ms": percentile(latencies, 0.5),
        "dispatch_latency_p95_ms": percentile(latencies, 0.95),
        "dispatch_latency_p99_ms": percentile(latencies, 0.99),
    }


def _trickle(store: SectorStore, ids: list[str], in_flight: int) -> None:
    """Start the sectors, ``in_flight`` at a time; return once all have ended."""
    from sealpool.sealing_tasks import start

    waiting, running = list(reversed(ids)), set[str]()
    while waiting or running:
        running = {s.id for s in store.get_many(running) if s.state not in TERMINAL}
        while waiting and len(running) < in_flight:
            running.add(sector_id := waiting.pop())
            start(store, sector_id, actor="bench")
        time.sleep(0.01)


def _dispatch_latencies(history: list[HistoryEntry]) -> list[int]:
    """Milliseconds from each message sent at once to the claim that ran it (a delayed one —
    WaitSeed, a back-off, a parked batch member — is no latency)."""
    latencies, sent = [], None
    for entry in history:
        if entry.event == "dispatch":
            sent = None if " in " in entry.detail else entry.at_ms
        elif entry.event == "claim" and sent is not None:
            latencies.append(entry.at_ms - sent)
            sent = None
    return latencies


def celery_floor(setup: str, messages: int) -> dict[str, float]:
    """Celery alone on this machine: one worker (``setup``, see FLOORS) runs no-op tasks
    sent by this process; timed from the first send until every task has finished."""
    import noop_app

    module, options = FLOORS[setup]
    app = noop_app.plain if module.endswith(":plain") else noop_app.app
    queue = f"floor-{setup}-{uuid.uuid4().hex[:6]}"
    node = f"{queue}@bench"
    argv = [
        sys.executable, "-m", "celery", "-A", module, "worker", "--queues", queue,
        "--hostname", node, "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
        *options,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": benchmark_pythonpath()}
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker = redis.Redis.from_url(os.environ["SEALPOOL_REDIS_URL"])
    try:
        while not app.control.ping(destination=[node], timeout=0.5):
            if worker.poll() is not None:
                raise SystemExit(f"the floor's worker ({setup}) exited with {worker.returncode}")
        meter = psutil.Process(worker.pid)
        processes = [meter, *meter.children(recursive=True)]  # prefork's pool processes
        cpu_before, own_before = _cpu_s(processes), _cpu_s([psutil.Process()])
        done = f"{queue}:done"
        began = time.perf_counter()
        for number in range(messages):
            app.send_task(
                noop_app.NOOP, kwargs={"done": done, "sector_id": f"f01000-{number}"}, queue=queue
            )
        while int(broker.get(done) or 0) < messages:
            time.sleep(0.005)
        elapsed = time.perf_counter() - began
        worker_ms = 1000 * (_cpu_s(processes) - cpu_before) / messages
        return {
            f"floor_{setup}_processes": len(processes),
            f"floor_{setup}_tasks_per_s": messages / elapsed,
            f"floor_{setup}_as_transitions_per_s": 2 * messages / elapsed,  # a phase task is 2
            f"floor_{setup}_cpu_ms_per_task_worker": worker_ms,
            f"floor_{setup}_cpu_ms_per_task_sender": 1000
            * (_cpu_s([psutil.Process()]) - own_before)
            / messages,
        }
    finally:
        worker.terminate()
        worker.wait()


def _cpu_s(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds the processes have used so far."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sectors", type=int, default=300)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the files go")
    parser.add_argument("--floor-messages", type=int, default=3000)
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=8, help="sectors at a time, latency")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    with benchmark_redis() as url:
        os.environ["SEALPOOL_REDIS_URL"] = url
        figures = run(options.sectors, options.root, options.latency_samples, options.in_flight)
        for setup in FLOORS:
            figures |= celery_floor(setup, options.floor_messages)
    print_figures(
        "sealpool overhead (zero-duration phases)",
        figures,
        {"transitions_per_s": "≥ 1000", "dispatch_latency_p50_ms": "≤ 5"},
        options.json,
    )


if __name__ == "__main__":
    main()
