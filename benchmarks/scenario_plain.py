"""The scenario on the plain-Celery baseline (benchmarks/naive_app.py): no sealpool code.

Each simulated host runs, as a Celery user would, one ``celery worker`` per phase with one
thread per slot (PC2 and C2 of a host: one worker on both queues, one thread: its GPU). A
feeder loop, the user's stand-in for the supervisor, keeps as many sectors between their
start and the end of PC1 as there are PC1 slots plus the same look-ahead: arrived deals
first, oldest first, else a CC sector. ``pc1-c``'s workers are killed -9 halfway
(its directory marked dead): its sectors are lost, as nothing in the chain recovers them.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from scenario_farm import (
    GPU_PHASES,
    HOST_FACTOR,
    HOSTS,
    KILLED,
    LOOKAHEAD,
    PHASE_SECONDS,
    SPREAD,
    Outcome,
    Run,
    kill_time,
    pc1_slots,
)

HERE = Path(__file__).resolve().parent
SHORT = {"AddPiece": "ap", "PreCommit1": "pc1", "PreCommit2": "pc2", "PreCommitting":
         "precommit", "WaitSeed": "waitseed", "Commit1": "c1", "Commit2": "c2",
         "Committing": "commit", "Finalize": "finalize"}  # fmt: skip
PHASE_OF = {short: phase for phase, short in SHORT.items()}
FEED_S = 0.25


def worker_groups(host: str) -> list[tuple[list[str], int]]:
    """(queues' phases, threads) of each worker process of ``host``."""
    slots = HOSTS[host]
    groups = [([SHORT[p]], n) for p, n in slots.items() if p not in GPU_PHASES]
    if all(p in slots for p in GPU_PHASES):
        groups.append(([SHORT[p] for p in GPU_PHASES], 1))
    return groups


def start_workers(url: str, run_id: str, root: Path, time_scale: float) -> dict[str, list]:
    """Every host's worker processes, by host."""
    base = {
        **os.environ, "PYTHONPATH": str(HERE), "NAIVE_BROKER": url, "NAIVE_RUN": run_id,
        "NAIVE_ROOT": str(root), "NAIVE_TIME_SCALE": str(time_scale), "NAIVE_SPREAD":
        str(SPREAD), "NAIVE_HOST_FACTOR": json.dumps(HOST_FACTOR),
        "NAIVE_PHASE_SECONDS": json.dumps({SHORT[p]: s for p, s in PHASE_SECONDS.items()}),
    }  # fmt: skip
    processes: dict[str, list] = {}
    for host in HOSTS:
        (root / host).mkdir(parents=True)
        for phases, threads in worker_groups(host):
            argv = [
                sys.executable, "-m", "celery", "-A", "naive_app", "worker", "--pool", "threads",
                "--concurrency", str(threads), "--hostname", f"{'+'.join(phases)}@{host}",
                "--queues", ",".join(f"{run_id}.{p}" for p in phases), "--loglevel", "WARNING",
            ]  # fmt: skip
            log = (root / host / f"{'+'.join(phases)}.log").open("wb")
            processes.setdefault(host, []).append(
                subprocess.Popen(argv, env={**base, "NAIVE_HOST": host}, stdout=log, stderr=log)
            )
    return processes


def wait_ready(url: str, processes: dict[str, list], timeout_s: float = 120.0) -> None:
    os.environ["NAIVE_BROKER"] = url
    from naive_app import app

    app.conf.broker_url = url
    expected = sum(len(each) for each in processes.values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0)) >= expected:
            return
    raise SystemExit(f"plain Celery workers not ready after {timeout_s:.0f} s")


def run(
    url: str, duration_s: float, time_scale: float, arrivals: list[float], kill: bool
) -> Outcome:
    """Run the scenario for ``duration_s`` with deals arriving at ``arrivals``, killing
    ``KILLED`` halfway if ``kill``."""
    run_id = f"plain-{uuid.uuid4().hex[:6]}"
    os.environ.update(NAIVE_BROKER=url, NAIVE_RUN=run_id)
    import naive_app

    naive_app.app.conf.broker_url = url
    client = redis.Redis.from_url(url, decode_responses=True)
    with tempfile.TemporaryDirectory(prefix="plain-scenario-") as tmp:
        root = Path(tmp)
        processes = start_workers(url, run_id, root, time_scale)
        try:
            wait_ready(url, processes)
            t0 = time.time()
            killed_at = kill_time(t0, duration_s, kill)
            arrived = feed(client, run_id, t0, duration_s, killed_at, arrivals, processes, root)
        finally:
            for each in (p for group in processes.values() for p in group):
                each.kill()
                each.wait()
    runs = [json.loads(raw) for raw in client.lrange(f"{run_id}:runs", 0, -1)]
    proving = {sector: float(at) for sector, at in client.hgetall(f"{run_id}:proving").items()}
    return Outcome(
        t0, killed_at,
        [Run(r["sector"], PHASE_OF[r["phase"]], r["host"], r["started"], r["ended"])
         for r in runs],
        proving, arrived, {deal: f"deal-{deal}" for deal in arrived},
        sum(r["copied_bytes"] for r in runs),
        {"copy_s_total": sum(r["copy_s"] for r in runs),
         "cross_host_farm_gib": sum(r["farm_bytes"] for r in runs) / (1 << 30),
         "sectors_lost": int(client.get(f"{run_id}:lost") or 0)},
    )  # fmt: skip


def feed(
    client: redis.Redis, run_id: str, t0: float, duration_s: float, killed_at: float,
    arrivals: list[float], processes: dict[str, list], root: Path,
) -> dict[str, float]:  # fmt: skip
    """The feeder loop until ``duration_s``; kills the host at ``killed_at``; the deals'
    arrival times."""
    from naive_app import seal

    pending = collections.deque(sorted((t0 + at, str(n)) for n, at in enumerate(arrivals, 1)))
    waiting: collections.deque[str] = collections.deque()
    arrived: dict[str, float] = {}
    started = cc = 0
    while (now := time.time()) < t0 + duration_s:
        if killed_at <= now and processes.get(KILLED):
            (root / KILLED / "DEAD").touch()
            for each in processes.pop(KILLED):
                each.kill()
        while pending and pending[0][0] <= now:
            at, deal = pending.popleft()
            arrived[deal] = at
            waiting.append(deal)
        done = int(client.get(f"{run_id}:pc1-done") or 0)
        lost = int(client.get(f"{run_id}:lost-before-pc1") or 0)
        for _ in range(pc1_slots() + LOOKAHEAD - (started - done - lost)):
            if waiting:
                seal(f"deal-{waiting.popleft()}")
            else:
                cc += 1
                seal(f"cc-{cc}")
            started += 1
        time.sleep(FEED_S)
    return arrived
