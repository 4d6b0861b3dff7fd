"""``sealpool storage``: this machine's storage paths."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import track

from sealpool.cli.context import CliContext, long_running, pass_context
from sealpool.cli.render import emit, json_option, table
from sealpool.storage import Leftover, ScratchCollector, format_bytes
from sealpool.worker_profiles.model import load_profile


@click.group("storage")
def group() -> None:
    """Look after this machine's storage paths."""


@group.command("gc")
@click.option(
    "--profile",
    "profile_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="TOML profile of this machine: its host and temp paths.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option(
    "--min-age",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Minutes a directory must have been left unchanged.",
)
@json_option
@long_running  # an embedded server started here would be an empty pool: everything unknown
@pass_context
def collect(
    ctx: CliContext, profile_file: Path, dry_run: bool, min_age: float, as_json: bool
) -> None:
    """Remove sector scratch directories this host no longer needs: the sector is Proving,
    Failed, Aborted, Pending, unknown to the pool, or bound to another host."""
    profile = load_profile(profile_file)
    roots = [entry.path for entry in profile.storage.temp]
    collector = ScratchCollector(ctx.store, profile.host, roots, 60 * min_age)
    leftovers = collector.leftovers()
    if not dry_run:
        steps = leftovers if as_json else track(leftovers, description="removing")
        leftovers = [leftover for leftover in steps if collector.remove(leftover)]
    data = {
        "host": profile.host,
        "dry_run": dry_run,
        "directories": leftovers,
        "bytes": sum(leftover.bytes for leftover in leftovers),
    }

    def human(console: Console) -> None:
        shown = table(
            f"{profile.host}: scratch {'to remove' if dry_run else 'removed'}",
            ["sector", "why", "size", "path"],
            [_row(leftover) for leftover in leftovers],
        )
        shown.columns[-1].overflow = "fold"  # a path cut short is no use
        console.print(shown)
        verb = "would free" if dry_run else "freed"
        console.print(f"{len(leftovers)} directories, {verb} {format_bytes(data['bytes'])}")

    emit(data, as_json, human)


def _row(leftover: Leftover) -> list[str]:
    return [leftover.sector, leftover.reason, format_bytes(leftover.bytes), leftover.path]
