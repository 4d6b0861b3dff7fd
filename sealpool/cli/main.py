"""The ``sealpool`` command group and its global options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import redis

from sealpool import __version__
from sealpool.cli import pool, sectors, server, storage
from sealpool.cli.batches import batches
from sealpool.cli.context import CliContext
from sealpool.cli.demo import demo
from sealpool.cli.supervisor import deals_group, exporter, ratio, supervisor
from sealpool.cli.web import web
from sealpool.cli.workers import profile_group, worker, workers
from sealpool.errors import SealpoolError


class SealpoolGroup(click.Group):
    """Turns sealpool and Redis errors into one clear line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SealpoolError as exc:
            raise click.ClickException(str(exc)) from None
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis error: {exc}") from None


@click.group(cls=SealpoolGroup)
@click.version_option(__version__, prog_name="sealpool")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML settings file (or SEALPOOL_CONFIG).",
)
@click.option("--redis-url", help="Redis server of the pool (or SEALPOOL_REDIS_URL).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Directory of the embedded Redis server (or SEALPOOL_DATA_DIR).",
)
@click.pass_context
def cli(
    ctx: click.Context, config_file: Path | None, redis_url: str | None, data_dir: Path | None
) -> None:
    """sealpool: Filecoin sector sealing on Celery and Redis."""
    ctx.obj = CliContext(config_file, {"redis_url": redis_url, "data_dir": data_dir})


cli.add_command(sectors.group)
cli.add_command(pool.group)
cli.add_command(server.group)
cli.add_command(demo)
cli.add_command(batches)
cli.add_command(profile_group)
cli.add_command(storage.group)
cli.add_command(worker)
cli.add_command(workers)
cli.add_command(supervisor)
cli.add_command(deals_group)
cli.add_command(ratio)
cli.add_command(exporter)
cli.add_command(web)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sealpool")
