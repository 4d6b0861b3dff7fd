"""Store benchmark: transitions per second, listing and stats with 100 000 sectors.

Run: ``python3 benchmarks/store_bench.py [--sectors 100000] [--walks 2000]``. Uses
SEALPOOL_REDIS_URL when set, else a private embedded server (AOF on, everysec fsync).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from unittest.mock import patch

import redis
from rich.console import Console
from rich.progress import track

from sealpool.cli import cli
from sealpool.store import PIPELINE, SectorState, SectorStore

from _server import benchmark_redis, print_figures

WORK_PHASES = PIPELINE[1:-1]
PROGRESS = Console(stderr=True)  # progress bars stay off stdout (and its --json)


def walk(store: SectorStore, sector_id: str, worker: str = "bench-host:1-1") -> Iterator[None]:
    """Drive a Pending sector to Proving as a farm does (each phase's message sent, then
    claimed and completed): one step per store call."""
    sector = store.start(sector_id, actor="bench")
    yield
    for phase in WORK_PHASES:
        store.message_sent(sector, "bench")
        yield
        lease = store.claim(sector.id, phase, worker)
        assert lease is not None
        yield
        sector = store.complete(lease)
        yield


def _client_window(url: str, prefix: str, walks: int, window_s: float, barrier, results) -> None:
    """One client process: its sectors made, then transitions until the shared window ends."""
    store = SectorStore(redis.Redis.from_url(url, decode_responses=True), prefix=prefix)
    sectors = store.create_many("f01000", "cc", walks)
    steps = (step for sector in sectors for step in walk(store, sector.id))
    barrier.wait()  # every client starts here, at once
    end = time.time() + window_s
    done = 0
    for _ in steps:
        if time.time() > end:
            break
        done += 1
    else:  # every sector walked before the window ended: the figure would be capped
        done = -1
    results.put(done)


def transitions_per_second(url: str, clients: int, walks: int, window_s: float) -> float:
    """Store calls that change a sector (start, sent, claim, complete) per second, over one
    wall-clock window that all ``clients`` processes start together (at a barrier)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(clients), spawn.Queue()
    args = (url, prefix, walks, window_s, barrier, results)
    workers = [spawn.Process(target=_client_window, args=args) for _ in range(clients)]
    for worker in workers:
        worker.start()
    done = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    if -1 in done:
        raise SystemExit(f"--walks {walks}: a client ran out of sectors within the window")
    return sum(done) / window_s


def bytes_per_proving_sector(client: redis.Redis, count: int) -> tuple[float, float]:
    """Redis memory per sector walked to Proving (record, indexes, request key), with its
    archived history still kept and once the archive's days have passed (its entries
    trimmed here, as a later append would)."""
    store = SectorStore(client, prefix=f"proving-{uuid.uuid4().hex[:8]}")
    before = client.info("memory")["used_memory"]
    for sector in track(store.create_many("f01000", "cc", count), "walking to Proving",
                        console=PROGRESS):  # fmt: skip
        for _ in walk(store, sector.id):
            pass
    archived = client.info("memory")["used_memory"] - before
    client.xtrim(store.keys.history_archive, minid=store.now_ms() + 1)
    return (client.info("memory")["used_memory"] - before) / count, archived / count


def timed(runs: int, call) -> float:
    """Median seconds of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cli_seconds(url: str, prefix: str, *args: str) -> float:
    """Median seconds of three runs of ``sealpool <args>`` in this process (no interpreter
    start), its output written to /dev/null as a redirected command's is (click's
    CliRunner would hold all of it in memory)."""
    env = {"SEALPOOL_REDIS_URL": url, "SEALPOOL_KEY_PREFIX": prefix}

    def invoke() -> None:
        with open(os.devnull, "w") as sink, patch.dict(os.environ, env), redirect_stdout(sink):
            cli.main(list(args), standalone_mode=False)

    return timed(3, invoke)


def supervisor_tick_seconds(url: str, prefix: str) -> tuple[float, float]:
    """A leader's tick over the filled pool (10 PC1 slots registered; with every in-flight
    sector heading for PC1 it starts none): the first, which also scans for lost
    messages (once per half lost_message_s) and raises the sectors near a deadline, and the
    median of the next 20 (each reads those sectors again and finds them raised)."""
    from sealpool.config import load_settings
    from sealpool.runtime import build_runtime
    from sealpool.supervisor import Supervisor
    from sealpool.worker_profiles.plan import SlotPlan
    from sealpool.worker_profiles.slots import SlotPool

    rt = build_runtime(load_settings(redis_url=url, key_prefix=prefix), prefix)
    plans = [SlotPlan("PreCommit1", i, None, None, {}) for i in range(10)]
    slots = SlotPool(rt.store.client, prefix, "bench-host", plans, [], [])
    slots.register()
    try:
        boss = Supervisor(rt, "bench")
        scan = timed(1, boss.act)  # the first tick also scans for lost messages
        return scan, timed(20, boss.act)
    finally:
        slots.unregister()


# figure → (goal as shown, whether a value meets it)
GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "transitions_per_s_1_clients": ("≥ 1,000", lambda v: v >= 1000),
    "transitions_per_s_8_clients": ("≥ 1,000", lambda v: v >= 1000),
    "bytes_per_proving_sector": ("≤ 1,500 B", lambda v: v <= 1500),
    "list_state_s_per_90000": ("≤ 0.5 s", lambda v: v <= 0.5),
    "list_state_records_per_s": ("≥ 200,000", lambda v: v >= 200_000),
    "pool_stats_s": ("≤ 0.01 s", lambda v: v <= 0.01),
    "supervisor_tick_s": ("≤ 0.05 s", lambda v: v <= 0.05),
}


def fill(store: SectorStore, sectors: int, in_flight: int, near: int) -> None:
    """``sectors`` Pending sectors, ``in_flight`` of them running PreCommit1 under live
    leases, each with a chain deadline in the deadline index: ``near`` of them a deadline
    already within the risk margin (the supervisor looks at those every tick), the others
    far off. Nothing in it expires during a run: every tick sees the same pool."""
    for _ in track(range(sectors // 5000), "filling the pool", console=PROGRESS):
        store.create_many("f01000", "cc", 5000)
    to_move = store.ids_in_state(SectorState.PENDING, limit=in_flight)
    far = {"deadlines": {"precommit": 10**9}, "deadline_epoch": 10**9}
    soon = {"deadlines": {"prove_commit": 1}, "deadline_epoch": 1}
    for number, sector_id in enumerate(track(to_move, "claiming PreCommit1", console=PROGRESS)):
        deadline = soon if number < near else far
        store.start(sector_id, actor="bench")
        store.move(sector_id, SectorState.PRE_COMMIT_1, actor="bench", updates=deadline)
        lease = store.claim(sector_id, SectorState.PRE_COMMIT_1, f"bench-host:{number}", 3600)
        assert lease is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sectors", type=int, default=100_000)
    parser.add_argument(
        "--walks", type=int, default=2000, help="sectors each client may walk in the window"
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds of the 8-client run")
    parser.add_argument("--proving", type=int, default=2000, help="sectors walked to Proving")
    parser.add_argument(
        "--near-deadline", type=int, default=100, help="in-flight sectors near a deadline"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    figures: dict[str, float | bool] = {}
    with benchmark_redis() as url:
        for clients in (1, 8):
            figures[f"transitions_per_s_{clients}_clients"] = transitions_per_second(
                url, clients, options.walks, options.window
            )
        client = redis.Redis.from_url(url, decode_responses=True)
        proving, archived = bytes_per_proving_sector(client, options.proving)
        figures["bytes_per_proving_sector"] = proving
        figures["bytes_per_proving_sector_archive_kept"] = archived
        prefix = f"scale-{uuid.uuid4().hex[:8]}"
        store = SectorStore(client, prefix=prefix)
        memory_before = client.info("memory")["used_memory"]
        in_flight = min(10_000, options.sectors // 10)
        fill(store, options.sectors, in_flight, options.near_deadline)
        figures["bytes_per_sector"] = (
            client.info("memory")["used_memory"] - memory_before
        ) / options.sectors
        figures["pool_size"] = options.sectors
        figures["in_flight"] = in_flight
        figures["near_deadline"] = options.near_deadline
        figures["list_state_10pct_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "PreCommit1", "--limit", "0", "--json"
        )
        pending = store.counts()[SectorState.PENDING]["cc"]
        figures["list_state_90pct_records"] = pending
        figures["list_state_90pct_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "Pending", "--limit", "0", "--json"
        )
        figures["list_state_records_per_s"] = pending / figures["list_state_90pct_s"]
        figures["list_state_s_per_90000"] = 90_000 / figures["list_state_records_per_s"]
        figures["list_state_default_limit_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "Pending"
        )
        figures["pool_stats_s"] = cli_seconds(url, prefix, "pool", "stats", "--json")
        figures["counts_call_s"] = timed(20, store.counts)
        scan, tick = supervisor_tick_seconds(url, prefix)
        figures["supervisor_tick_s"] = tick
        figures["supervisor_tick_with_lost_scan_s"] = scan
    met = {name: check(figures[name]) for name, (_goal, check) in GOALS.items()}
    figures.update({f"{name}_goal_met": value for name, value in met.items()})
    print_figures(
        "sealpool store benchmark",
        figures,
        {
            name: f"{goal} ({'met' if met[name] else 'NOT met'})"
            for name, (goal, _) in GOALS.items()
        },
        options.json,
    )


if __name__ == "__main__":
    main()
