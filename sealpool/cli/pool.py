"""``sealpool pool``: the pool as a whole."""

from __future__ import annotations

import click
from rich.console import Console

from sealpool import views
from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option, table
from sealpool.store import KINDS


@click.group("pool")
def group() -> None:
    """Look at the pool as a whole."""


@group.command()
@json_option
@pass_context
def stats(ctx: CliContext, as_json: bool) -> None:
    """Count sectors per state and kind."""
    data = views.pool_stats(ctx.store, ctx.settings)
    counts = data["states"]

    def human(console: Console) -> None:
        rows = [
            [state, *(by_kind[kind] for kind in KINDS), sum(by_kind.values())]
            for state, by_kind in counts.items()
        ]
        rows.append(
            ["total", *(sum(c[kind] for c in counts.values()) for kind in KINDS), data["total"]]
        )
        console.print(table("sealpool pool", ["state", *KINDS, "all"], rows))
        if len(data["miners"]) > 1:
            columns = ["miner", "sealing", "max", "share", "prio", "last no.", "up to"]
            rows = [[v if v is not None else "-" for v in m.values()] for m in data["miners"]]
            console.print(table("miners", columns, rows))
        if data["no_live_worker"]:
            phases = ", ".join(data["no_live_worker"])
            console.print(f"[bold red]stuck:[/] no live worker runs {phases}")
        if data["paused_everywhere"]:
            phases = ", ".join(data["paused_everywhere"])
            console.print(f"[bold red]stuck:[/] paused on every host that runs it: {phases}")
        if data["counters"]:
            console.print(
                table(
                    "events",
                    ["counter", "count"],
                    [[k, v] for k, v in sorted(data["counters"].items())],
                )
            )

    emit(data, as_json, human)
