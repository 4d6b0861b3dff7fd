"""``sealpool pool``: the pool as a whole."""

from __future__ import annotations

import click
from rich.console import Console

from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option, table
from sealpool.store import KINDS, WORK_PHASES
from sealpool.supervisor.stuck import phases_without_consumers
from sealpool.worker_profiles.slots import live_consumers


@click.group("pool")
def group() -> None:
    """Look at the pool as a whole."""


@group.command()
@json_option
@pass_context
def stats(ctx: CliContext, as_json: bool) -> None:
    """Count sectors per state and kind."""
    store, settings = ctx.store, ctx.settings
    counts = store.counts()
    consumers = live_consumers(store.client, store.prefix, 3 * settings.heartbeat_s)
    data = {
        "states": {state.value: by_kind for state, by_kind in counts.items()},
        "total": sum(sum(by_kind.values()) for by_kind in counts.values()),
        "counters": store.counters(),
        "no_live_worker": phases_without_consumers(counts, consumers, WORK_PHASES),
    }

    def human(console: Console) -> None:
        rows = [
            [state, *(by_kind[kind] for kind in KINDS), sum(by_kind.values())]
            for state, by_kind in counts.items()
        ]
        rows.append(
            ["total", *(sum(c[kind] for c in counts.values()) for kind in KINDS), data["total"]]
        )
        console.print(table("sealpool pool", ["state", *KINDS, "all"], rows))
        if data["no_live_worker"]:
            phases = ", ".join(data["no_live_worker"])
            console.print(f"[bold red]stuck:[/] no live worker runs {phases}")
        if data["counters"]:
            console.print(
                table(
                    "events",
                    ["counter", "count"],
                    [[k, v] for k, v in sorted(data["counters"].items())],
                )
            )

    emit(data, as_json, human)
