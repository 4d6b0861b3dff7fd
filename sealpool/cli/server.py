"""``sealpool server``: the embedded Redis server that holds the pool."""

from __future__ import annotations

import click
from rich.console import Console

from sealpool import server
from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option
from sealpool.secrets import redact_url

show_password_option = click.option(
    "--show-password", is_flag=True, help="Print the URL with its password (hidden otherwise)."
)


@click.group("server")
def group() -> None:
    """Start, stop and inspect the embedded Redis server."""


def _report(
    info: server.ServerInfo | None, ctx: CliContext, show_password: bool, as_json: bool
) -> None:
    url = None if info is None else info.url if show_password else redact_url(info.url)
    data = {
        "running": info is not None,
        "url": url,
        "pid": info.pid if info else None,
        "data_dir": str(ctx.settings.data_dir),
    }

    def human(console: Console) -> None:
        if info:
            console.print(
                f"embedded server running: {url} (pid {info.pid}) in {ctx.settings.data_dir}"
            )
        else:
            console.print(f"no embedded server running in {ctx.settings.data_dir}")

    emit(data, as_json, human)


@group.command()
@click.option(
    "--bind",
    help="Address to listen on: a LAN address (or 0.0.0.0) for worker hosts, with a password. "
    "Default: as the last start, else 127.0.0.1.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to listen on. Default: as the last start, else a free one.",
)
@click.option(
    "--password",
    envvar="SEALPOOL_SERVER_PASSWORD",
    help="Password clients must give (better: SEALPOOL_SERVER_PASSWORD); '' for none. "
    "Default: as the last start.",
)
@show_password_option
@json_option
@pass_context
def start(
    ctx: CliContext,
    bind: str | None,
    port: int | None,
    password: str | None,
    show_password: bool,
    as_json: bool,
) -> None:
    """Start the server (or reuse the running one); its address, port and password are kept
    in the data directory for every later start."""
    info = server.start(ctx.settings.data_dir, bind=bind, port=port, password=password)
    _report(info, ctx, show_password, as_json)


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
@show_password_option
@json_option
@pass_context
def status(ctx: CliContext, show_password: bool, as_json: bool) -> None:
    """Whether the server runs, and where; exits 1 when it does not."""
    info = server.status(ctx.settings.data_dir)
    _report(info, ctx, show_password, as_json)
    if info is None:
        raise SystemExit(1)
