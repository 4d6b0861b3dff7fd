"""Pause, resume and drain a host's phase workers through Celery's remote control.

A pause of ``(host, phase)`` is kept in Redis (``<pool>:paused``, field ``host|phase``, the
server time it began) and sent to the phase's running process (node ``<queue>@<host>``, as
``sealpool worker`` names it) as ``cancel_consumer`` of every queue it reads: the phase's
shared queue and, for a temp phase, the host's own. Resuming deletes the field and sends
``add_consumer``. A phase process that starts later (the launcher restarting it, a rebooted
host) reads its host's pauses before it consumes (:func:`_skip_paused_queues`), so a
paused phase stays paused. Running phases are never touched: they finish and send their
sector on. Draining is pausing, then waiting until the paused slots are idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_init

from sealpool.config import load_settings
from sealpool.routing import QUEUE_NAMES, host_queues
from sealpool.runtime import runtime
from sealpool.store import SectorState
from sealpool.worker_profiles.launcher import node_name
from sealpool.worker_profiles.model import parse_phase
from sealpool.worker_profiles.slots import RUNNING, SlotKeys, SlotReport, server_ms, slot_reports

log = logging.getLogger(__name__)
REPLY_S = 5.0  # a live worker answers at once; a hung one is reported


@dataclass(frozen=True)
class ControlResult:
    """What a pause or resume did: the phases and queues, which processes answered, and
    which have slots on the host but did not answer (not running: they read the pause when
    they start)."""

    host: str
    paused: bool
    phases: list[str]
    queues: list[str]
    answered: list[str]
    not_running: list[str]


def phases_named(phase: str | None) -> list[SectorState]:
    """The work phase called ``phase`` (see :func:`parse_phase`), or every work phase."""
    return list(QUEUE_NAMES) if phase is None else [parse_phase(phase)]


def pauses(client: redis.Redis, pool: str) -> dict[tuple[str, str], int]:
    """Every paused ``(host, phase)`` → server time (ms) its pause began."""
    return {
        (host, phase): int(at)
        for field, at in client.hgetall(SlotKeys(pool).paused).items()
        for host, phase in [field.split("|", 1)]
    }


def pause(
    app: Celery, client: redis.Redis, pool: str, host: str, phases: Sequence[SectorState]
) -> ControlResult:
    """Stop ``host``'s processes of ``phases`` taking work (persisted; running phases go on)."""
    now = server_ms(client)
    client.hset(SlotKeys(pool).paused, mapping={f"{host}|{p.value}": now for p in phases})
    return _tell(app, client, pool, host, phases, "cancel_consumer")


def resume(
    app: Celery, client: redis.Redis, pool: str, host: str, phases: Sequence[SectorState]
) -> ControlResult:
    """Let ``host``'s processes of ``phases`` take work again."""
    client.hdel(SlotKeys(pool).paused, *(f"{host}|{p.value}" for p in phases))
    return _tell(app, client, pool, host, phases, "add_consumer")


def _tell(
    app: Celery,
    client: redis.Redis,
    pool: str,
    host: str,
    phases: Sequence[SectorState],
    command: str,
) -> ControlResult:
    """Send ``command`` for each queue of ``phases`` to the host's processes that run them
    (a phase with no slots on the host has no process to tell)."""
    states: dict[str, set[str]] = {}
    for report in slot_reports(client, pool):
        if report.host == host:
            states.setdefault(report.phase, set()).add(report.state)
    answered: list[str] = []
    not_running: list[str] = []
    for phase in phases:
        node = node_name(phase, host)
        if phase.value not in states:
            continue
        queues = host_queues(pool, [phase], host)
        alive = states[phase.value] != {"lost"}
        heard = alive and all(_answered(app, command, queue, node) for queue in queues)
        (answered if heard else not_running).append(node)
    return ControlResult(
        host=host,
        paused=command == "cancel_consumer",
        phases=[p.value for p in phases],
        queues=host_queues(pool, list(phases), host),
        answered=sorted(answered),
        not_running=sorted(not_running),
    )


def _answered(app: Celery, command: str, queue: str, node: str) -> bool:
    """Whether Celery worker ``node`` answered ``command`` (a consumer control) for ``queue``."""
    replies = app.control.broadcast(
        command, arguments={"queue": queue}, destination=[node], reply=True, timeout=REPLY_S
    )
    return any(node in reply for reply in replies)


def running_slots(
    client: redis.Redis, pool: str, host: str, phases: Iterable[SectorState]
) -> list[SlotReport]:
    """The slots of ``host``'s ``phases`` still running a phase (busy or draining)."""
    names = {p.value for p in phases}
    return [
        report
        for report in slot_reports(client, pool)
        if report.host == host and report.phase in names and report.state in RUNNING
    ]


def wait_quiet(
    client: redis.Redis,
    pool: str,
    host: str,
    phases: Iterable[SectorState],
    timeout_s: float,
    progress: Callable[[list[SlotReport]], None] = lambda _running: None,
    poll_s: float = 1.0,
) -> list[SlotReport]:
    """Wait until no slot of ``host``'s ``phases`` runs a phase, or ``timeout_s`` passed;
    the slots still running then (none when quiet). ``progress`` sees each poll's."""
    phases = list(phases)
    deadline = time.monotonic() + timeout_s
    while True:
        running = running_slots(client, pool, host, phases)
        progress(running)
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@worker_init.connect
def _skip_paused_queues(sender: Any, **_: Any) -> None:
    """A ``sealpool worker`` process of a paused phase starts without consuming its queues
    (``add_consumer`` from :func:`resume` turns them on)."""
    settings = load_settings()
    if not settings.worker_phase:
        return
    slots = runtime(settings.key_prefix).slots
    if slots is None:
        return
    paused = pauses(slots.client, settings.key_prefix)
    if (slots.host, slots.phase) in paused:
        queues = host_queues(settings.key_prefix, [SectorState(slots.phase)], slots.host)
        sender.app.amqp.queues.deselect(queues)
        log.warning(
            "%s on %s is paused: not consuming %s until `sealpool workers resume %s`",
            slots.phase, slots.host, ", ".join(queues), slots.host,
        )  # fmt: skip
