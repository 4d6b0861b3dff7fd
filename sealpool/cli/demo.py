"""``sealpool demo``: seal sectors on a simulated farm, with a progress bar per phase."""

from __future__ import annotations

import shlex
import signal
from dataclasses import asdict
from types import FrameType

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from sealpool.cli.render import duration, emit, json_option, short, table
from sealpool.demo import DemoResult, run_demo
from sealpool.storage import format_bytes
from sealpool.store import WORK_PHASES, SectorState


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _summary(result: DemoResult) -> list[list[object]]:
    rows: list[list[object]] = [
        ["sectors sealed", f"{result.sectors_sealed} / {result.sectors}"],
        ["sectors failed", result.sectors_failed],
        ["hosts", result.hosts],
        ["elapsed (wall)", duration(result.elapsed_s)],
        ["cross-host temp bytes", format_bytes(result.cross_host_bytes)],
        ["temp phases of each sector on one host", result.temp_phase_hosts_consistent],
        ["throughput (farm time)", f"{result.throughput_per_h * 24 / result.time_scale:.1f} "
                                   "sectors/day"],
        ["bottleneck bound (farm time)", f"{result.bound_per_h * 24 / result.time_scale:.1f} "
                                         f"sectors/day ({short(result.bottleneck)})"],
        ["throughput / bound", f"{result.bound_ratio:.2f}"],
        ["messages per sector", f"{result.messages_per_sector:.2f}"],
    ]  # fmt: skip
    for phase, seconds in result.phase_seconds.items():
        rows.append(
            [
                f"mean {short(phase)}",
                f"{duration(seconds * result.time_scale)} farm ({duration(seconds)} wall)",
            ]
        )
    return rows


def _kept(result: DemoResult) -> list[str]:
    """How to look at the pool the demo kept: shell lines to paste."""
    where = "its own Redis server" if result.data_dir else "SEALPOOL_REDIS_URL's server"
    lines = [f"The pool is kept (in {where}); to look at it:"]
    if result.data_dir:
        lines.append(f"  export SEALPOOL_DATA_DIR={shlex.quote(result.data_dir)}")
    lines += [
        f"  export SEALPOOL_KEY_PREFIX={shlex.quote(result.key_prefix)}",
        "  sealpool sectors list",
        "  sealpool pool stats",
        "  sealpool sectors show ID      # an id from the list",
    ]
    stop = "sealpool server stop; " if result.data_dir else ""
    lines.append(f"Workers' logs: {shlex.quote(result.root + '/logs')}")
    lines.append(f"Afterwards: {stop}rm -r {shlex.quote(result.root)}")
    return lines


@click.command()
@click.option("--sectors", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--hosts", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=1, max=100_000),
    default=1000,
    show_default=True,
    help="Farm seconds per wall second.",
)
@json_option
def demo(sectors: int, hosts: int, time_scale: float, as_json: bool) -> None:
    """Seal sectors to Proving on a simulated farm of real Celery workers."""
    signal.signal(signal.SIGTERM, _interrupt)
    with Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=as_json,
    ) as bars:
        starting = bars.add_task(
            f"starting workers on {hosts} host{'s' if hosts > 1 else ''}", total=None
        )
        tasks: dict[SectorState, TaskID] = {}

        def show(done: dict[SectorState, int]) -> None:
            if not tasks:  # the workers are up: sealing has begun
                bars.remove_task(starting)
                for phase in WORK_PHASES:
                    tasks[phase] = bars.add_task(short(phase.value), total=sectors)
            for phase, count in done.items():
                bars.update(tasks[phase], completed=count)

        try:
            result = run_demo(sectors, hosts, time_scale, progress=show)
        except KeyboardInterrupt:
            raise click.ClickException("interrupted: every worker and server stopped") from None

    def human(console: Console) -> None:
        console.print(table("sealpool demo", ["measure", "result"], _summary(result)))
        console.print("\n".join(_kept(result)), markup=False, highlight=False, soft_wrap=True)

    emit(asdict(result), as_json, human)
