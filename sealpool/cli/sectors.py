"""``sealpool sectors``: add, list and show sectors."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from typing import Any

import click
import pydantic_core
from rich.console import Console
from rich.table import Table

from sealpool import miners, views
from sealpool.chain.batching import BatchBook
from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import (
    duration,
    emit,
    json_option,
    print_json_chunks,
    short,
    table,
    utc,
)
from sealpool.storage import format_bytes
from sealpool.store import KINDS, WORK_PHASES, PhaseStatus, Sector, SectorState
from sealpool.supervisor import actions
from sealpool.supervisor.stuck import Consumers, queue_stuck_reason, stuck_reason
from sealpool.worker_control import pauses
from sealpool.worker_profiles.slots import live_consumers

_STATE = click.Choice([state.value for state in SectorState], case_sensitive=False)
_PHASE = click.Choice([phase.value for phase in WORK_PHASES], case_sensitive=False)
_KIND = click.Choice(list(KINDS), case_sensitive=False)
_COLUMNS = ["id", "kind", "state", "status", "prio", "host", "retries", "last error"]
_QUEUED = b'"status":"queued"'
# A longer token (a proof) is shown as its start and length; hashes, CIDs, paths in full.
_LONG = 128


def _retries(attempts: dict[str, int]) -> int:
    """Claims beyond the first of each phase: 0 for a sector that never had to retry."""
    return sum(max(0, count - 1) for count in attempts.values())


def _row(sector: Sector, stuck: str | None = None) -> list[object]:
    return [
        sector.id,
        sector.kind,
        sector.state,
        f"stuck: {stuck}" if stuck else sector.status,
        sector.priority,
        sector.host,
        _retries(sector.attempts),
        sector.last_error,
    ]


@click.group("sectors")
def group() -> None:
    """Add, list, inspect, retry, resume and abort sectors."""


@group.command()
@click.option("--kind", type=_KIND, required=True, help="deal (carries deals) or cc.")
@click.option("--count", type=click.IntRange(1, 100_000), default=1, show_default=True)
@click.option(
    "--deal-id",
    "deal_ids",
    type=click.IntRange(0),
    multiple=True,
    help="A waiting deal to pack into the deal sector (repeatable; see `deals list`).",
)
@click.option("--priority", type=click.IntRange(0, 9), help="0 is the most urgent.")
@click.option("--request-id", help="Idempotency key: repeating it creates nothing new.")
@click.option("--miner", "miner_id", help="A miner of the `miners` setting (default: the first).")
@json_option
@pass_context
def add(
    ctx: CliContext,
    kind: str,
    count: int,
    deal_ids: tuple[int, ...],
    priority: int | None,
    request_id: str | None,
    miner_id: str | None,
    as_json: bool,
) -> None:
    """Create sectors in the Pending state. A deal sector takes the deals named (waiting
    in `sealpool deals list`) into one sector; a CC sector takes none."""
    if kind.lower() == "deal" and (not deal_ids or count != 1):
        raise click.UsageError("--kind deal needs --deal-id (one or more) and --count 1")
    if kind.lower() == "cc" and deal_ids:
        raise click.UsageError("--deal-id is for --kind deal; a CC sector holds no deals")
    miner = miners.named(ctx.settings, miner_id)
    sectors = ctx.store.create_many(
        miner.id,
        kind.lower(),
        count,  # type: ignore[arg-type]
        deal_ids=deal_ids,
        priority=priority,
        request_id=request_id,
        actor="cli",
        numbers=miners.number_range(miner, ctx.runtime.chain_for(miner.id)),
    )
    emit(
        sectors,
        as_json,
        lambda console: console.print(table("added", _COLUMNS, [_row(s) for s in sectors])),
    )


@group.command("list")
@click.option("--state", type=_STATE, help="Only sectors in this state.")
@click.option("--kind", type=_KIND, help="Only sectors of this kind.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Most sectors to show; 0 shows all.",
)
@click.option("--miner", help="Only sectors of this miner (e.g. f01000).")
@json_option
@pass_context
def list_(
    ctx: CliContext,
    state: str | None,
    kind: str | None,
    limit: int,
    miner: str | None,
    as_json: bool,
) -> None:
    """List sectors, most urgent first; a queued sector no live worker can take is shown
    as stuck."""
    store, settings = ctx.store, ctx.settings
    selection = (
        SectorState.parse(state) if state else None,
        kind.lower() if kind else None,
        None if miner else limit or None,
    )
    consumers = live_consumers(store.client, store.prefix, 3 * settings.heartbeat_s)
    paused = set(pauses(store.client, store.prefix))
    if as_json:
        chunks = store.listing(*selection[:2], limit or None, miner)  # type: ignore[arg-type]
        marked = partial(
            _stuck_json, consumers=consumers, host_binding=settings.host_binding, paused=paused
        )
        print_json_chunks(map(marked, chunks))
        return
    sectors = store.list(*selection)  # type: ignore[arg-type]
    if miner:
        sectors = [s for s in sectors if s.miner == miner][: limit or None]
    stuck = {s.id: stuck_reason(s, consumers, settings.host_binding, paused) for s in sectors}
    emit(
        [
            {**s.model_dump(mode="json"), "stuck": stuck[s.id]} if stuck[s.id] else s
            for s in sectors
        ],
        as_json,
        lambda console: console.print(
            table(f"{len(sectors)} sectors", _COLUMNS, [_row(s, stuck[s.id]) for s in sectors])
        ),
    )


def _stuck_json(
    chunk: list[bytes], consumers: Consumers, host_binding: bool, paused: Consumers
) -> list[bytes]:
    """Listed records' JSON, with why each is stuck when its queued phase can't be taken.
    Only a queued record is parsed (JSON escapes every quote inside a string, so the
    status can't be mistaken), and a chunk without one is passed on joined, as one item."""
    joined = b",".join(chunk)
    if _QUEUED not in joined:
        return [joined] if joined else []
    marked = []
    for raw in chunk:
        if _QUEUED in raw:
            record = json.loads(raw)
            shown = _stuck(record, consumers, host_binding, paused)
            raw = raw if shown is record else pydantic_core.to_json(shown)
        marked.append(raw)
    return marked


def _stuck(
    record: dict[str, Any], consumers: Consumers, host_binding: bool, paused: Consumers
) -> dict[str, Any]:
    """The record, with why it is stuck when no live, unpaused worker can take its queued
    phase."""
    if record["status"] != PhaseStatus.QUEUED.value:
        return record
    state = SectorState(record["state"])
    why = queue_stuck_reason(state, record["host"], consumers, host_binding, paused)
    return {**record, "stuck": why} if why else record


@group.command()
@click.argument("sector_id")
@json_option
@pass_context
def show(ctx: CliContext, sector_id: str, as_json: bool) -> None:
    """Show one sector's record and history."""
    data = views.sector(ctx.store, sector_id)
    book = BatchBook(ctx.store.client, ctx.store.prefix, ctx.settings)
    member = book.member(sector_id)
    batch = book.batch(member.batch) if member else None
    data["batch"] = asdict(batch) if batch else None  # the batch it waits in

    def human(console: Console) -> None:
        console.print(_fields(data["sector"]))
        if batch:
            console.print(f"batch {batch.id}: {batch.state}, {len(batch.members)} sectors "
                          f"{batch.cut} {batch.reason}".rstrip())  # fmt: skip
        created = data["sector"]["created_ms"]
        console.print(
            table(
                "history (time since created)",
                ["after", "actor", "event", "state", "detail"],
                [
                    [
                        duration((h["at_ms"] - created) / 1000),
                        h["actor"],
                        h["event"],
                        _transition(h["from_state"], h["to_state"]),
                        h["detail"],
                    ]
                    for h in data["history"]
                ],
            )
        )

    emit(data, as_json, human)


def _fields(sector: dict[str, Any]) -> Table:
    """The record as key/value lines: times in UTC, a line per phase output, empty fields
    left out (``--json`` shows them all, raw)."""
    lines = Table.grid(padding=(0, 1))
    lines.add_column(style="bold", no_wrap=True)
    lines.add_column(overflow="fold")
    for name, value in sector.items():
        if value in (None, {}, [], "") or name == "outputs":
            continue
        if name.endswith("_ms"):
            name, value = name.removesuffix("_ms"), f"{utc(value)} UTC"
        elif name == "attempts":
            value = " ".join(f"{short(phase)}={n}" for phase, n in value.items())
        elif isinstance(value, dict) and set(value) == {"epoch", "value"}:  # ticket, seed
            value = f"epoch {value['epoch']} {value['value']}"  # the hash whole on its line
        lines.add_row(name, _plain(value))
    for phase, output in sector.get("outputs", {}).items():
        lines.add_row(f"out {short(phase)}", _plain(output))
    return lines


def _plain(value: object, key: str = "") -> str:
    """A value in words: mappings as ``key=value``, sizes humanized, a proof shortened."""
    if isinstance(value, dict):
        pairs = " ".join(f"{k}={_plain(v, k)}" for k, v in value.items() if v is not None)
        return f"({pairs})" if key else pairs
    if isinstance(value, list):
        return ",".join(map(_plain, value)) or "-"
    if isinstance(value, int) and key.endswith("bytes"):
        return format_bytes(value).replace(" ", "")
    text = str(value)
    if len(text) > _LONG and not any(c.isspace() or c == "/" for c in text):
        return f"{text[:16]}… ({len(text)} chars)"
    return text


def _transition(before: str, after: str) -> str:
    return short(after) if before in ("", after) else f"{short(before)}→{short(after)}"


@group.command()
@click.argument("sector_id")
@json_option
@pass_context
def retry(ctx: CliContext, sector_id: str, as_json: bool) -> None:
    """Retry a Failed sector at the phase that failed."""
    sector = actions.retry(ctx.runtime, sector_id)
    emit(sector, as_json, lambda c: c.print(f"{sector.id} queued at {sector.state}"))


@group.command()
@click.argument("sector_id")
@json_option
@pass_context
def abort(ctx: CliContext, sector_id: str, as_json: bool) -> None:
    """Abort a sector for good (its scratch space is freed)."""
    sector = actions.abort(ctx.runtime, sector_id)
    emit(sector, as_json, lambda c: c.print(f"{sector.id} aborted"))


@group.command()
@click.argument("sector_id")
@click.option("--from", "phase", type=_PHASE, required=True, help="Phase to resume at.")
@json_option
@pass_context
def resume(ctx: CliContext, sector_id: str, phase: str, as_json: bool) -> None:
    """Resume a sector at a phase (a Failed one, or a legal step back)."""
    sector = actions.resume(ctx.runtime, sector_id, SectorState.parse(phase))
    emit(sector, as_json, lambda c: c.print(f"{sector.id} queued at {sector.state}"))
