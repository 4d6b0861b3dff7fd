"""``sealpool profile check``, ``sealpool worker --profile`` and ``sealpool workers``."""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console

from sealpool import views, worker_control
from sealpool.app import app
from sealpool.cli.context import CliContext, long_running, pass_context
from sealpool.cli.render import duration, emit, json_option, print_json, short, table
from sealpool.config import CONFIG_ENV, setting_sources
from sealpool.connection import connect
from sealpool.errors import ConfigError
from sealpool.routing import QUEUE_NAMES
from sealpool.storage import format_bytes
from sealpool.store import SectorState
from sealpool.worker_control import ControlResult
from sealpool.worker_profiles.effective import apply_profile, profile_sources
from sealpool.worker_profiles.launcher import run_workers
from sealpool.worker_profiles.model import load_profile
from sealpool.worker_profiles.plan import plan_profile
from sealpool.worker_profiles.slots import SlotReport, server_ms

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
        memory = plan.memory
        console.print(
            table(
                "memory",
                ["phase", "slots", "each", "shared", "total"],
                [
                    [short(m.phase), m.slots, _size(m.per_slot), _size(m.shared), _size(m.total)]
                    for m in memory.phases
                ]
                + [
                    ["reserve", "", "", "", _size(memory.reserve)],
                    ["need", "", "", "", _size(memory.need)],
                    ["RAM here", "", "", "", _size(memory.ram)],
                    ["swap, not counted", "", "", "", _size(memory.swap)],
                ],
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


def _phases(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[SectorState]:
    try:
        return worker_control.phases_named(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_host = click.argument("host")
_phase = click.option(
    "--phase",
    "phases",
    callback=_phases,
    help="Only this phase (pc1 or PreCommit1, …); default: every phase of HOST.",
)


@click.group("workers", invoke_without_command=True)
@json_option
@pass_context
@click.pass_context
def workers(command: click.Context, ctx: CliContext, as_json: bool) -> None:
    """Every slot of every host: idle, busy (which sector), paused, draining (its last
    phase, then paused) or lost, and its busy share; pause, resume or drain a host."""
    if command.invoked_subcommand is not None:
        return
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


def _control(ctx: CliContext, host: str, phases: list[SectorState], paused: bool) -> ControlResult:
    store = ctx.store  # first: points the Celery app at the pool's server
    act = worker_control.pause if paused else worker_control.resume
    return act(app, store.client, store.prefix, host, phases)


def _told(result: ControlResult) -> str:
    """One line: what was paused or resumed, and which processes heard it."""
    verb = "paused" if result.paused else "resumed"
    every = len(result.phases) == len(QUEUE_NAMES)
    phases = "every phase" if every else " ".join(short(phase) for phase in result.phases)
    told = " ".join(result.answered) or "no running process (they read it when they start)"
    line = f"{result.host}: {verb} {phases}; told {told}"
    if result.not_running:
        line += f"; not running: {' '.join(result.not_running)}"
    return line


def _running_line(host: str, running: list[SlotReport], now_ms: int) -> str:
    """``host: 2 running: pc1 s-1 (3m05s), …`` or ``host: quiet``."""
    if not running:
        return f"{host}: quiet, no slot runs a phase"
    each = [
        f"{short(r.phase)} {r.sector or '?'}"
        + (f" ({duration(max(0, now_ms - r.since_ms) / 1000)})" if r.since_ms else "")
        for r in running
    ]
    return f"{host}: {len(running)} running: " + ", ".join(each)


@workers.command("pause")
@_host
@_phase
@json_option
@pass_context
def pause(ctx: CliContext, host: str, phases: list[SectorState], as_json: bool) -> None:
    """Stop HOST's workers (of one phase with --phase) taking new work; running phases go
    on. Kept in Redis: a worker restarted meanwhile stays paused."""
    result = _control(ctx, host, phases, paused=True)
    emit(result, as_json, lambda console: console.print(_told(result), highlight=False))


@workers.command("resume")
@_host
@_phase
@json_option
@pass_context
def resume(ctx: CliContext, host: str, phases: list[SectorState], as_json: bool) -> None:
    """Let HOST's workers (of one phase with --phase) take work again."""
    result = _control(ctx, host, phases, paused=False)
    emit(result, as_json, lambda console: console.print(_told(result), highlight=False))


@workers.command("drain")
@_host
@_phase
@click.option("--wait", is_flag=True, help="Block until no slot of HOST runs a phase.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="With --wait: give up (exit 1) after this many seconds; default: no limit.",
)
@json_option
@pass_context
def drain(
    ctx: CliContext,
    host: str,
    phases: list[SectorState],
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Pause HOST (or one phase of it) and let its running phases finish; say whether it is
    quiet (no slot runs a phase), or with --wait, wait until it is."""
    result = _control(ctx, host, phases, paused=True)
    client, pool = ctx.store.client, ctx.store.prefix
    limit = math.inf if timeout is None else timeout
    if not wait:
        running = worker_control.running_slots(client, pool, host, phases)
    elif as_json:
        running = worker_control.wait_quiet(client, pool, host, phases, limit)
    else:
        console = Console()
        console.print(_told(result), highlight=False)
        with console.status(f"draining {host}") as status:
            running = worker_control.wait_quiet(
                client,
                pool,
                host,
                phases,
                limit,
                lambda now: status.update(_running_line(host, now, server_ms(client))),
            )
    quiet = not running

    def human(console: Console) -> None:
        if not wait:
            console.print(_told(result), highlight=False)
        console.print(_running_line(host, running, server_ms(client)), highlight=False)
        if not quiet and wait:
            console.print(f"{host}: not quiet after {duration(limit)}", highlight=False)

    emit({**asdict(result), "quiet": quiet, "running": running}, as_json, human)
    if wait and not quiet:
        raise click.exceptions.Exit(1)
