"""``sealpool server``: the embedded Redis server that holds the pool."""

from __future__ import annotations

import click
from rich.console import Console

from sealpool import server
from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option


@click.group("server")
def group() -> None:
    """Start, stop and inspect the embedded Redis server."""


def _report(info: server.ServerInfo | None, as_json: bool, ctx: CliContext) -> None:
    data = {
        "running": info is not None,
        "url": info.url if info else None,
        "pid": info.pid if info else None,
        "data_dir": str(ctx.settings.data_dir),
    }

    def human(console: Console) -> None:
        if info:
            console.print(
                f"embedded server running: {info.url} (pid {info.pid}) in {ctx.settings.data_dir}"
            )
        else:
            console.print(f"no embedded server running in {ctx.settings.data_dir}")

    emit(data, as_json, human)


@group.command()
@json_option
@pass_context
def start(ctx: CliContext, as_json: bool) -> None:
    """Start the server (or reuse the running one)."""
    _report(server.start(ctx.settings.data_dir), as_json, ctx)


@group.command()
@json_option
@pass_context
def stop(ctx: CliContext, as_json: bool) -> None:
    """Stop the server after flushing its append-only file."""
    stopped = server.stop(ctx.settings.data_dir)
    emit(
        {"stopped": stopped},
        as_json,
        lambda console: console.print("stopped" if stopped else "no server was running"),
    )


@group.command()
@json_option
@pass_context
def status(ctx: CliContext, as_json: bool) -> None:
    """Whether the server runs, and where."""
    _report(server.status(ctx.settings.data_dir), as_json, ctx)
