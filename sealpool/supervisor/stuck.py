"""Sectors that wait for a worker that isn't there.

A queued phase is taken by a live consumer of its queue: a ``sealpool worker`` process
running that phase on the sector's host (phases that read its temp data) or on any host.
A sector whose queue has no live consumer is *stuck*: `sealpool sectors list` says so, and
`sealpool pool stats` names the phases no live process runs. So is one whose every live
consumer is paused (`sealpool workers pause` or `drain`): it waits until one is resumed.
"""

from __future__ import annotations

from collections.abc import Collection

from sealpool.routing import TEMP_PHASES
from sealpool.store import PhaseStatus, Sector, SectorState

Consumers = Collection[tuple[str, str]]  # live (host, phase) pairs


def stuck_reason(
    sector: Sector, consumers: Consumers, host_binding: bool = True, paused: Consumers = ()
) -> str | None:
    """Why the queued sector can't be taken now, or None when a live consumer can take it."""
    if sector.status is not PhaseStatus.QUEUED:
        return None
    return queue_stuck_reason(sector.state, sector.host, consumers, host_binding, paused)


def queue_stuck_reason(
    state: SectorState,
    host: str | None,
    consumers: Consumers,
    host_binding: bool = True,
    paused: Consumers = (),
) -> str | None:
    """Why a phase queued in ``state`` (temp data on ``host``) can't be taken now by one of
    the live ``consumers`` that is not ``paused``."""
    phase = state.value
    if host_binding and state in TEMP_PHASES and host:
        if (host, phase) not in consumers:
            return f"no live {phase} worker on {host}"
        if (host, phase) in paused:
            return f"{phase} paused on {host}"
        return None
    hosts = {each_host for each_host, each in consumers if each == phase}
    if not hosts:
        return f"no live {phase} worker"
    if all((each_host, phase) in paused for each_host in hosts):
        return f"{phase} paused on every host"
    return None


def phases_without_consumers(
    counts: dict[SectorState, dict[str, int]], consumers: Consumers, phases: Collection[SectorState]
) -> list[str]:
    """The work phases that hold sectors but have no live consumer on any host."""
    running = {phase for _host, phase in consumers}
    return [
        phase.value
        for phase in phases
        if sum(counts.get(phase, {}).values()) and phase.value not in running
    ]


def phases_paused_everywhere(
    counts: dict[SectorState, dict[str, int]],
    consumers: Consumers,
    paused: Consumers,
    phases: Collection[SectorState],
) -> list[str]:
    """The work phases that hold sectors and have live consumers, every one of them paused."""
    takers = {phase for _host, phase in set(consumers) - set(paused)}
    live = {phase for _host, phase in consumers}
    return [
        phase.value
        for phase in phases
        if sum(counts.get(phase, {}).values()) and phase.value in live - takers
    ]
