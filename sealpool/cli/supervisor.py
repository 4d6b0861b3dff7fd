"""``sealpool supervisor``, ``sealpool deals`` and ``sealpool ratio``."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

import click
import redis
from rich.console import Console

from sealpool import views
from sealpool.backends import SECTOR_BYTES
from sealpool.cli.context import CliContext, long_running, pass_context
from sealpool.cli.render import duration, emit, json_option, short, table, utc
from sealpool.deals import DealBook, check_piece
from sealpool.exporter import PoolCollector
from sealpool.storage import format_bytes
from sealpool.supervisor import Supervisor, TickReport
from sealpool.supervisor.loop import run_supervisor
from sealpool.worker_profiles.model import parse_size


@click.command("supervisor")
@click.option("--ticks", type=click.IntRange(1), help="Stop after this many ticks.")
@click.option(
    "--name",
    default=lambda: f"{socket.gethostname()}:{os.getpid()}",
    help="Name of this supervisor in history and leadership.",
)
@json_option
@long_running
@pass_context
def supervisor(ctx: CliContext, ticks: int | None, name: str, as_json: bool) -> None:
    """Keep the pool full, watch deadlines, recover sectors: tick until stopped. A Redis
    outage is waited out (a line per retry), not a reason to exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    leading: list[bool] = []

    def show(report: TickReport) -> None:
        if as_json:
            emit(report, True, lambda _console: None)
        elif _eventful(report) or leading[-1:] != [report.leader]:
            click.echo(_summary(report))
        leading[:] = [report.leader]

    boss = None
    try:
        boss = run_supervisor(
            lambda: Supervisor(ctx.runtime, name), ctx.settings.tick_s, show, ticks
        )
    except KeyboardInterrupt:
        pass
    finally:
        if boss is not None:
            with contextlib.suppress(redis.RedisError):
                boss.lease.resign()


def _eventful(report: TickReport) -> bool:
    """Whether the tick did anything (idle ticks print nothing)."""
    return any(
        getattr(report, name)
        for name in ("started", "took_over", "redispatched", "restarted", "failed",
                     "reticketed", "aborted", "prioritized")
    )  # fmt: skip


def _summary(report: TickReport) -> str:
    return (
        f"{'leader' if report.leader else 'standby'}: started {len(report.started)}, took over "
        f"{len(report.took_over)}, re-sent {len(report.redispatched)}, restarted "
        f"{len(report.restarted)}, failed {len(report.failed)}, re-ticketed "
        f"{len(report.reticketed)}, aborted {len(report.aborted)}, raised "
        f"{len(report.prioritized)} ({1000 * report.seconds:.1f} ms)"
    )


@click.group("deals")
def deals_group() -> None:
    """Deals waiting to be sealed (packed into deal sectors first)."""


@deals_group.command("add")
@click.argument("deal_ids", type=click.IntRange(0), nargs=-1, required=True)
@click.option(
    "--piece-size",
    default="32GiB",
    show_default=True,
    help="Padded piece size of each deal: a power of two from 128 B to the sector size.",
)
@click.option("--piece-cid", help="The piece's CID (commP, baga6ea4sea…), for AddPiece.")
@click.option("--source", help="Where AddPiece reads the piece: an http(s) URL or a local file.")
@json_option
@pass_context
def deals_add(
    ctx: CliContext,
    deal_ids: tuple[int, ...],
    piece_size: str,
    piece_cid: str | None,
    source: str | None,
    as_json: bool,
) -> None:
    """Add deals to wait for a sector."""
    if (piece_cid or source) and len(deal_ids) != 1:
        raise click.UsageError("--piece-cid and --source name one deal's piece: give one ID")
    sector_bytes = SECTOR_BYTES[ctx.settings.sector_size]
    try:
        size = parse_size(piece_size)
    except ValueError as exc:
        raise click.ClickException(f"--piece-size: {exc}") from None
    try:
        check_piece(size, sector_bytes, piece_cid=piece_cid, source=source)
    except ValueError as exc:  # one line naming the field and the value
        raise click.ClickException(str(exc)) from None
    book = DealBook(ctx.store.client, ctx.settings.key_prefix)
    added = [
        book.add(deal_id, size, sector_bytes=sector_bytes, piece_cid=piece_cid, source=source)
        for deal_id in deal_ids
    ]
    emit(added, as_json, lambda c: c.print(f"{len(added)} deals waiting to be sealed"))


@deals_group.command("list")
@json_option
@pass_context
def deals_list(ctx: CliContext, as_json: bool) -> None:
    """Deals not yet in a sector, oldest first."""
    waiting = DealBook(ctx.store.client, ctx.settings.key_prefix).waiting()
    emit(
        waiting,
        as_json,
        lambda c: c.print(
            table(
                "waiting deals",
                ["deal", "piece size", "piece CID", "source", "added (UTC)"],
                [
                    [d.deal_id, format_bytes(d.piece_size), d.piece_cid, d.source, utc(d.added_ms)]
                    for d in waiting
                ],
            )
        ),
    )


@click.command("ratio")
@click.option(
    "--pc1", type=click.IntRange(1), help="PC1 slots to plan for (default: the registered ones)."
)
@json_option
@pass_context
def ratio(ctx: CliContext, pc1: int | None, as_json: bool) -> None:
    """Suggested slots per phase from measured phase times, the bottleneck, sectors/day
    (in farm time when SEALPOOL_TIME_SCALE is set, as the demo reports)."""
    result = views.ratio(ctx.store, ctx.settings, pc1)
    scale = ctx.settings.time_scale  # phase times are measured in wall time

    def human(console: Console) -> None:
        clock = "" if scale == 1 else f" in farm time (×{scale:g})"
        console.print(
            table(
                f"for {result['pc1_slots']} PC1 slots: bottleneck "
                f"{short(result['bottleneck'])}, "
                f"{result['sectors_per_day'] / scale:.1f} sectors/day{clock}",
                ["phase", "p50", "p90", "from", "suggested", "current", "idle"],
                [
                    [
                        short(r["phase"]),
                        duration(r["p50_s"] * scale),
                        duration(r["p90_s"] * scale),
                        r["source"],
                        r["suggested_slots"],
                        r["current_slots"],
                        None if r["idle_share"] is None else f"{100 * r['idle_share']:.0f}%",
                    ]
                    for r in result["phases"]
                ],
            )
        )

    emit(result, as_json, human)


@click.command("exporter")
@click.option("--port", type=click.IntRange(1, 65535), default=9464, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@long_running
@pass_context
def exporter(ctx: CliContext, port: int, address: str) -> None:
    """Serve the pool's Prometheus metrics until stopped."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(PoolCollector(ctx.store))
    start_http_server(port, addr=address, registry=registry)
    click.echo(f"metrics of pool {ctx.settings.key_prefix} on http://{address}:{port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
