"""``sealpool web``: serve the read-only dashboard until stopped."""

from __future__ import annotations

import click

from sealpool.cli.context import CliContext, long_running, pass_context


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8464, show_default=True)
@click.option(
    "--password",
    envvar="SEALPOOL_WEB_PASSWORD",
    help="Require HTTP basic auth with this password (or SEALPOOL_WEB_PASSWORD); needed to "
    "listen on anything but loopback.",
)
@long_running
@pass_context
def web(ctx: CliContext, host: str, port: int, password: str | None) -> None:
    """Serve a read-only dashboard of the pool (refreshed live) until stopped."""
    import uvicorn

    from sealpool.web import create_app, is_loopback

    if not password and not is_loopback(host):
        raise click.ClickException(
            f"--host {host}: not a loopback address; give --password (or "
            "SEALPOOL_WEB_PASSWORD) so the dashboard asks for it"
        )
    app = create_app(ctx.store, ctx.settings, password)
    click.echo(f"dashboard of pool {ctx.settings.key_prefix} on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning")
