"""``sealpool profile check``, ``sealpool worker --profile`` and ``sealpool workers``."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option, table
from sealpool.errors import ConfigError
from sealpool.worker_profiles.launcher import run_workers
from sealpool.worker_profiles.model import load_profile
from sealpool.worker_profiles.plan import plan_profile
from sealpool.worker_profiles.slots import slot_reports

_FILE = click.Path(path_type=Path, dir_okay=False)


def _cells(values: tuple[int, ...] | list[int] | None) -> str:
    return ",".join(map(str, values)) if values else "-"


@click.group("profile")
def profile_group() -> None:
    """Check worker profiles."""


@profile_group.command()
@click.argument("file", type=_FILE)
@json_option
def check(file: Path, as_json: bool) -> None:
    """Resolve FILE on this machine: every slot's cores, GPUs and paths, or what is wrong."""
    plan = plan_profile(load_profile(file), file)

    def human(console: Console) -> None:
        console.print(
            table(
                f"{plan.host}: slots",
                ["phase", "slot", "cores", "gpus", "locks"],
                [
                    [s.phase, s.index, _cells(s.cores), _cells(s.gpus), ",".join(s.locks) or "-"]
                    for s in plan.slots
                ],
            )
        )
        console.print(
            table(
                "storage",
                ["role", "path", "capacity", "free"],
                [[p.role, p.path, p.capacity, p.free] for p in plan.storage],
            )
        )

    if as_json or not plan.errors:
        emit(plan, as_json, human)
    if plan.errors:
        raise ConfigError("\n".join(plan.errors))


@click.command("worker")
@click.option(
    "--profile", "profile_file", type=_FILE, required=True, help="TOML profile of this machine."
)
@pass_context
def worker(ctx: CliContext, profile_file: Path) -> None:
    """Run this machine's Celery workers as its profile says, until SIGTERM."""
    raise SystemExit(run_workers(profile_file, ctx.settings.key_prefix))


@click.command("workers")
@json_option
@pass_context
def workers(ctx: CliContext, as_json: bool) -> None:
    """Every slot of every host: idle, busy (which sector) or lost, and its busy share."""
    reports = slot_reports(ctx.store.client, ctx.settings.key_prefix)
    now = time.time() * 1000

    def human(console: Console) -> None:
        rows = [
            [
                r.host,
                r.phase,
                r.index,
                r.state,
                r.sector,
                f"{(now - r.since_ms) / 1000:.0f}s" if r.since_ms else None,
                f"{100 * r.busy_share:.0f}%",
                _cells(r.cores),
                _cells(r.gpus),
            ]
            for r in reports
        ]
        console.print(
            table(
                "sealpool workers",
                ["host", "phase", "slot", "state", "sector", "for", "busy (1 h)", "cores", "gpus"],
                rows,
            )
        )

    emit(reports, as_json, human)
