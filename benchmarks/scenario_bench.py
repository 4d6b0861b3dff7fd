"""A farm scenario where scheduling matters: sealpool, a plain-Celery baseline and sealpool's
ablation, one after the other in one run, on the same deals arriving at the same times.

The farm (benchmarks/scenario_farm.py): three PC1 hosts, one 1.5 times slower, one killed
-9 halfway through; PC2 and C2 sharing each PC1 host's GPU; phase times ±30 % (seeded);
deals arriving over time (seeded, at 40 % of the bound's rate) while the supervisor — for
the baseline, a feeder loop — keeps the PC1 slots full with CC sectors. Each set-up runs for
``--duration`` wall seconds. Figures: sectors reaching Proving in the window after the
warm-up against the bound (the bottleneck phase's capacity with the hosts alive, at the
mean phase times — the same computation for all three), deal latency from arrival to
Proving, the GPUs' idle share, bytes read across hosts.

Run: ``python3 benchmarks/scenario_bench.py [--duration 120] [--time-scale 1000]
[--seed 1] [--modes sealpool,plain,ablation] [--no-kill] [--json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import subprocess
import sys

from rich.console import Console
from rich.table import Table
from scenario_farm import DEAL_SHARE, HOSTS, Outcome, Run, capacity, figures

from _server import benchmark_redis

MODES = ("sealpool", "plain", "ablation")
CAPTION = (
    "plain: a plain Celery pipeline (naive_app.py); ablation: sealpool minus locality and "
    "priority (ablation_app.py); latencies in farm hours"
)


def deal_arrivals(duration_s: float, time_scale: float, seed: int) -> list[float]:
    """Seconds after the start at which deals arrive: a seeded Poisson stream at
    DEAL_SHARE of the bound's rate, over the first three quarters of the run."""
    caps = capacity(time_scale, {host: 1.0 for host in HOSTS})
    rate = DEAL_SHARE * min(caps.values())
    draw, at, times = random.Random(seed), 0.0, []
    while (at := at + draw.expovariate(rate)) < 0.75 * duration_s:
        times.append(at)
    return times


def child(
    mode: str, duration_s: float, time_scale: float, arrivals: list[float], kill: bool
) -> Outcome:
    """One set-up's run in this process (a Celery app is configured once per process)."""
    if mode == "plain":
        import scenario_plain

        return scenario_plain.run(os.environ["SEALPOOL_REDIS_URL"], duration_s, time_scale,
                                  arrivals, kill)  # fmt: skip
    import scenario_sealpool

    return scenario_sealpool.run(mode, duration_s, time_scale, arrivals, kill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="wall seconds per set-up")
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="set-ups, comma-separated")
    parser.add_argument("--no-kill", action="store_true", help="no host is killed")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    arrivals = deal_arrivals(options.duration, options.time_scale, options.seed)
    if options.child:
        kill = not options.no_kill
        outcome = child(options.child, options.duration, options.time_scale, arrivals, kill)
        print(json.dumps(dataclasses.asdict(outcome)))
        return
    modes = options.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))}; expected {', '.join(MODES)}")
    results = {}
    with benchmark_redis() as url:
        for mode in modes:
            argv = [sys.executable, __file__, "--child", mode, "--seed", str(options.seed),
                    "--duration", str(options.duration),
                    "--time-scale", str(options.time_scale),
                    *(["--no-kill"] if options.no_kill else [])]  # fmt: skip
            done = subprocess.run(argv, env={**os.environ, "SEALPOOL_REDIS_URL": url},
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode:
                raise SystemExit(f"{mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            raw = json.loads(done.stdout.strip().splitlines()[-1])
            outcome = Outcome(**{**raw, "runs": [Run(**r) for r in raw["runs"]]})
            results[mode] = figures(outcome, options.duration, options.time_scale)
    if options.json:
        print(json.dumps(results, indent=2))
        return
    show(results, options)


def show(results: dict[str, dict[str, float]], options: argparse.Namespace) -> None:
    kill = "no host killed" if options.no_kill else "pc1-c killed halfway"
    table = Table(title=f"farm scenario, {options.duration:g} s per set-up, time scale "
                  f"{options.time_scale:g}, seed {options.seed}, {kill}")  # fmt: skip
    table.add_column("figure")
    for mode in results:
        table.add_column(mode, justify="right")
    names = dict.fromkeys(name for figures in results.values() for name in figures)
    for name in names:
        table.add_row(name, *(_shown(results[mode].get(name)) for mode in results))
    table.caption = CAPTION
    Console().print(table)


def _shown(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
