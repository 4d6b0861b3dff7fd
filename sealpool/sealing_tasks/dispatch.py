"""Sending a sector's current phase to its queue, and recording that it was sent."""

from __future__ import annotations

import redis

from sealpool import routing
from sealpool.app import PRIORITY_SEP, PRIORITY_STEPS, app
from sealpool.store import Sector, SectorState, SectorStore

URGENT_PRIORITY = 0


def dispatch(
    store: SectorStore,
    sector: Sector,
    *,
    actor: str = "sealpool",
    countdown: float | None = None,
    bind_host: bool = True,
) -> None:
    """Send the task of the sector's current phase; the router picks queue and priority.

    ``bind_host=False`` sends temp phases to the shared queue (``host_binding`` off).
    """
    urgent = sector.priority == URGENT_PRIORITY
    host = sector.host if bind_host else None
    kwargs = {
        "pool": store.prefix,
        "sector_id": sector.id,
        "kind": sector.kind,
        "host": host,
        "urgent": urgent,
    }
    target = routing.route(store.prefix, sector.state, sector.kind, host, urgent)
    delay = f" in {countdown:.3f}s" if countdown else ""
    store.note(
        sector.id,
        sector.state,
        actor,
        "dispatch",
        f"queue={target['queue']} priority={target['priority']} host={host or '-'}{delay}",
    )
    app.send_task(
        routing.task_name(sector.state),
        kwargs=kwargs,
        countdown=countdown,
        argsrepr="()",
        kwargsrepr=f"{{'sector_id': {sector.id!r}}}",  # what logs and Flower show
    )


def messages_waiting(client: redis.Redis, queue: str) -> int:
    """Messages in a queue on the Redis broker, summed over its priority lists
    (``<queue>`` for step 0, ``<queue>:<step>`` for the others)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}")
    return sum(pipe.execute())


def start(store: SectorStore, sector_id: str, actor: str = "sealpool") -> Sector:
    """Move a Pending sector into the pipeline and dispatch its first phase."""
    sector = store.move(sector_id, SectorState.ADD_PIECE, actor=actor, event="start")
    dispatch(store, sector, actor=actor)
    return sector
