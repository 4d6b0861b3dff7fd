"""``sealpool profile check``, ``sealpool worker --profile`` and ``sealpool workers``."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console

from sealpool import views
from sealpool.cli.context import CliContext, long_running, pass_context
from sealpool.cli.render import duration, emit, json_option, print_json, short, table
from sealpool.config import CONFIG_ENV, setting_sources
from sealpool.connection import connect
from sealpool.errors import ConfigError
from sealpool.storage import format_bytes
from sealpool.worker_profiles.effective import apply_profile, profile_sources
from sealpool.worker_profiles.launcher import run_workers
from sealpool.worker_profiles.model import load_profile
from sealpool.worker_profiles.plan import plan_profile
from sealpool.worker_profiles.slots import server_ms

_FILE = click.Path(path_type=Path, dir_okay=False)


def _cells(values: tuple[int, ...] | list[int] | None) -> str:
    """Core or GPU numbers, runs of consecutive ones as ranges: ``0-3,8``."""
    if not values:
        return "-"
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _size(size: int | None) -> str | None:
    return None if size is None else format_bytes(size)


@click.group("profile")
def profile_group() -> None:
    """Check worker profiles."""


@profile_group.command()
@click.argument("file", type=_FILE)
@json_option
@pass_context
def check(ctx: CliContext, file: Path, as_json: bool) -> None:
    """Resolve FILE on this machine: every slot's cores, GPUs and paths, and where each
    setting comes from (profile, env, config file, default), or what is wrong."""
    try:
        profile = load_profile(file)
        settings, effective = apply_profile(ctx.settings, profile, file)
    except ConfigError as exc:
        if not as_json:
            raise
        print_json({"file": str(file), "errors": str(exc).splitlines()})
        raise click.exceptions.Exit(1) from None
    plan = plan_profile(effective, file)
    sources = profile_sources(profile, setting_sources(ctx.config_file, **ctx.overrides))
    shown = {
        name: {"value": getattr(settings, name), "source": source}
        for name, source in sources.items()
    }

    def human(console: Console) -> None:
        console.print(
            table(
                f"{plan.host}: slots",
                ["phase", "slot", "cores", "gpus", "locks"],
                [
                    [
                        short(s.phase),
                        s.index,
                        _cells(s.cores),
                        _cells(s.gpus),
                        ",".join(s.locks) or "-",
                    ]
                    for s in plan.slots
                ],
            )
        )
        console.print(
            table(
                "storage",
                ["role", "path", "capacity", "free"],
                [[p.role, p.path, _size(p.capacity), _size(p.free)] for p in plan.storage],
            )
        )
        console.print(
            table(
                "settings",
                ["setting", "value", "from"],
                [[name, _setting(each["value"]), each["source"]] for name, each in shown.items()],
            )
        )

    if plan.errors and not as_json:
        raise ConfigError("\n".join(plan.errors))
    emit({"file": str(file), **asdict(plan), "settings": shown}, as_json, human)
    if plan.errors:
        raise click.exceptions.Exit(1)


def _setting(value: object) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    return str(value)


@click.command("worker")
@click.option(
    "--profile", "profile_file", type=_FILE, required=True, help="TOML profile of this machine."
)
@long_running
@pass_context
def worker(ctx: CliContext, profile_file: Path) -> None:
    """Run this machine's Celery workers as its profile says, until SIGTERM."""
    settings = ctx.pool_settings
    if ctx.config_file:  # the launcher's check and the phase processes read it from there
        os.environ[CONFIG_ENV] = str(ctx.config_file.resolve())
    client = connect(settings)  # an unreachable pool is one clear line here, not in each worker
    env = {"SEALPOOL_REDIS_URL": str(settings.redis_url)}
    run_workers(profile_file, settings.key_prefix, client, env)


@click.command("workers")
@json_option
@pass_context
def workers(ctx: CliContext, as_json: bool) -> None:
    """Every slot of every host: idle, busy (which sector) or lost, and its busy share."""
    reports = views.slots(ctx.store)
    now = server_ms(ctx.store.client)

    def human(console: Console) -> None:
        rows = [
            [
                r["host"],
                short(r["phase"]),
                r["index"],
                r["state"],
                r["sector"],
                duration(max(0, now - r["since_ms"]) / 1000) if r["since_ms"] else None,
                f"{100 * r['busy_share']:.0f}%",
                _cells(r["cores"]),
                _cells(r["gpus"]),
            ]
            for r in reports
        ]
        console.print(
            table(
                "sealpool workers",
                ["host", "phase", "slot", "state", "sector", "for", "busy 1h", "cores", "gpus"],
                rows,
            )
        )

    emit(reports, as_json, human)
