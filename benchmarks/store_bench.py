"""Store benchmark: transitions per second, listing and stats with 100 000 sectors.

Run: ``python3 benchmarks/store_bench.py [--sectors 100000] [--walks 400]``. Uses
SEALPOOL_REDIS_URL when set, else a private embedded server (AOF on, everysec fsync).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid

import redis
from click.testing import CliRunner
from rich.console import Console
from rich.progress import track

from sealpool.cli import cli
from sealpool.store import PIPELINE, SectorState, SectorStore

from _server import benchmark_redis, print_figures

WORK_PHASES = PIPELINE[1:-1]
PROGRESS = Console(stderr=True)  # progress bars stay off stdout (and its --json)


def walk_sectors(url: str, prefix: str, count: int) -> tuple[int, float]:
    """Create ``count`` sectors and drive each to Proving; return (transitions, seconds)."""
    store = SectorStore(redis.Redis.from_url(url, decode_responses=True), prefix=prefix)
    sectors = store.create_many("f01000", "cc", count)
    transitions = 0
    started = time.perf_counter()
    for sector in sectors:
        store.move(sector.id, SectorState.ADD_PIECE, actor="bench")
        transitions += 1
        for phase in WORK_PHASES:
            lease = store.claim(sector.id, phase, "bench")
            assert lease is not None
            store.complete(lease)
            transitions += 2
    return transitions, time.perf_counter() - started


def _walk_job(args: tuple[str, str, int]) -> tuple[int, float]:
    return walk_sectors(*args)


def transitions_per_second(url: str, clients: int, walks: int) -> float:
    """Store transitions (move, claim, complete) per second with ``clients`` processes."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    jobs = [(url, prefix, walks // clients)] * clients
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        results = pool.map(_walk_job, jobs)
    wall = max(seconds for _n, seconds in results) or time.perf_counter() - started
    return sum(n for n, _s in results) / wall


def timed(runs: int, call) -> float:
    """Median seconds of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cli_seconds(url: str, prefix: str, *args: str) -> float:
    env = {"SEALPOOL_REDIS_URL": url, "SEALPOOL_KEY_PREFIX": prefix}
    runner = CliRunner()

    def invoke() -> None:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output

    return timed(3, invoke)


def supervisor_tick_seconds(url: str, prefix: str) -> tuple[float, float]:
    """A leader's tick over the filled pool (10 PC1 slots registered): the first, which also
    scans for lost messages (once per half lost_message_s), and the median of the others."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sectors", type=int, default=100_000)
    parser.add_argument("--walks", type=int, default=400, help="sectors walked per run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    figures: dict[str, float] = {}
    with benchmark_redis() as url:
        for clients in (1, 8):
            figures[f"transitions_per_s_{clients}_clients"] = transitions_per_second(
                url, clients, options.walks
            )
        client = redis.Redis.from_url(url, decode_responses=True)
        prefix = f"scale-{uuid.uuid4().hex[:8]}"
        store = SectorStore(client, prefix=prefix)
        memory_before = client.info("memory")["used_memory"]
        batch = 5000
        for _ in track(range(options.sectors // batch), "filling the pool", console=PROGRESS):
            store.create_many("f01000", "cc", batch)
        to_move = store.ids_in_state(SectorState.PENDING, limit=options.sectors // 10)
        for sector_id in track(to_move, "moving 10% to PreCommit1", console=PROGRESS):
            store.move(sector_id, SectorState.ADD_PIECE, actor="bench")
            store.move(sector_id, SectorState.PRE_COMMIT_1, actor="bench")
        figures["bytes_per_sector"] = (
            client.info("memory")["used_memory"] - memory_before
        ) / options.sectors
        figures["pool_size"] = options.sectors
        figures["list_state_10pct_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "PreCommit1", "--limit", "0", "--json"
        )
        figures["list_state_90pct_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "Pending", "--limit", "0", "--json"
        )
        figures["list_state_default_limit_s"] = cli_seconds(
            url, prefix, "sectors", "list", "--state", "Pending"
        )
        figures["pool_stats_s"] = cli_seconds(url, prefix, "pool", "stats", "--json")
        figures["counts_call_s"] = timed(20, store.counts)
        scan, tick = supervisor_tick_seconds(url, prefix)
        figures["supervisor_tick_s"] = tick
        figures["supervisor_tick_with_lost_scan_s"] = scan
    print_figures(
        "sealpool store benchmark",
        figures,
        {
            "transitions_per_s_1_clients": "≥ 1000",
            "transitions_per_s_8_clients": "≥ 1000",
            "list_state_10pct_s": "≤ 1 s",
            "list_state_90pct_s": "≤ 1 s",
            "pool_stats_s": "≤ 0.05 s",
            "supervisor_tick_s": "≤ 0.05 s",
        },
        options.json,
    )


if __name__ == "__main__":
    main()
