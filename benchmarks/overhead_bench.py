"""sealpool's own overhead: sectors through every phase with a zero-duration backend.

One simulated host of real ``sealpool worker`` processes (4 slots per phase, 16 for the two
chain messages, which wait an epoch for landing), every phase time 0 and the sim chain at
time scale 1000 (the seed wait, 4.7 s, holds no slot). The sim backend's small files go to
``--root`` (tmpfs by default), so the figures are sealpool's and Celery's costs, not the
disk's. Prints store transitions per second (claims, completions, starts) of a burst of
sectors, the CPU time each kind of process spent per transition meanwhile, and the dispatch
latency — from the dispatch of a phase to its claim by an idle worker, measured on sectors
sent one at a time — p50 and p99. Then Celery's floor on the same machine: no-op tasks with
sealpool's settings, one worker process of 4 threads, sent by this process; each phase task
carries two transitions (claim, complete), so twice that rate is what sealpool would reach if
its own work cost nothing.

Run: ``python3 benchmarks/overhead_bench.py [--sectors 300] [--root DIR] [--json]``.
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

from sealpool.sealing_tasks.dispatch import messages_waiting
from sealpool.store import TERMINAL, WORK_PHASES, SectorState

from _server import benchmark_pythonpath, benchmark_redis, print_figures

S = SectorState
ZERO = {phase.value: 0.0 for phase in WORK_PHASES}
ALONE = 5  # sectors sent through one at a time, for the dispatch latency of an idle farm
DEFAULT_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def run(sectors: int, root: Path | None) -> dict[str, float]:
    from sealpool.farm import LocalFarm
    from sealpool.runtime import runtime
    from sealpool.sealing_tasks import start
    from sealpool.supervisor.ratio import percentile

    pool = f"overhead-{uuid.uuid4().hex[:6]}"
    env = {
        "SEALPOOL_TIME_SCALE": "1000",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
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
        alone = store.create_many("f01000", "cc", ALONE)  # one at a time: idle workers
        for sector in alone:
            start(store, sector.id, actor="bench")
            while store.get(sector.id).state not in TERMINAL:
                time.sleep(0.01)
    transitions = sum(
        1
        for sector in created
        for entry in store.history(sector.id)
        if entry.event in ("claim", "complete", "start")
    )
    latencies = []
    for sector in alone:
        sent = None
        for entry in store.history(sector.id):
            if entry.event == "dispatch":  # a delayed one (WaitSeed, back-off) is no latency
                sent = None if " in " in entry.detail else entry.at_ms
            elif entry.event == "claim" and sent is not None:
                latencies.append(entry.at_ms - sent)
                sent = None
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
        "dispatch_latency_p50_ms": percentile(latencies, 0.5),
        "dispatch_latency_p99_ms": percentile(latencies, 0.99),
    }


def celery_floor(messages: int, concurrency: int = 4) -> dict[str, float]:
    """Celery alone on this machine with sealpool's settings: one worker process
    (``concurrency`` threads) runs no-op tasks while this process sends them."""
    from noop_app import NOOP, app

    queue = f"floor-{uuid.uuid4().hex[:6]}"
    argv = [
        sys.executable, "-m", "celery", "-A", "noop_app", "worker", "--queues", queue,
        "--concurrency", str(concurrency), "--hostname", f"{queue}@bench",
        "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": benchmark_pythonpath()}
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not app.control.ping(destination=[f"{queue}@bench"], timeout=0.5):
            if worker.poll() is not None:
                raise SystemExit(f"the floor's worker exited with {worker.returncode}")
        meter = psutil.Process(worker.pid)
        cpu_before, own_before = _cpu_s([meter]), _cpu_s([psutil.Process()])
        began = time.perf_counter()
        for number in range(messages):
            app.send_task(NOOP, kwargs={"sector_id": f"f01000-{number}"}, queue=queue)
        broker = redis.Redis.from_url(app.conf.broker_url)
        while messages_waiting(broker, queue):
            time.sleep(0.005)
        elapsed = time.perf_counter() - began
        return {
            "floor_tasks_per_s": messages / elapsed,
            "floor_as_transitions_per_s": 2 * messages / elapsed,  # a phase task is 2
            "floor_cpu_ms_per_task_worker": 1000 * (_cpu_s([meter]) - cpu_before) / messages,
            "floor_cpu_ms_per_task_sender": 1000
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
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    with benchmark_redis() as url:
        os.environ["SEALPOOL_REDIS_URL"] = url
        figures = run(options.sectors, options.root)
        figures |= celery_floor(options.floor_messages)
    print_figures(
        "sealpool overhead (zero-duration phases)",
        figures,
        {"transitions_per_s": "≥ 1000", "dispatch_latency_p50_ms": "≤ 5"},
        options.json,
    )


if __name__ == "__main__":
    main()
