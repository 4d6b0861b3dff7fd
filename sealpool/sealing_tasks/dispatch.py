"""Sending a sector's current phase to its queue, and recording that it was sent."""

from __future__ import annotations

from sealpool import routing
from sealpool.app import app
from sealpool.store import Sector, SectorState, SectorStore

URGENT_PRIORITY = 0


def dispatch(
    store: SectorStore, sector: Sector, *, actor: str = "sealpool", countdown: float | None = None
) -> None:
    """Send the task of the sector's current phase; the router picks queue and priority."""
    urgent = sector.priority == URGENT_PRIORITY
    kwargs = {
        "pool": store.prefix,
        "sector_id": sector.id,
        "kind": sector.kind,
        "host": sector.host,
        "urgent": urgent,
    }
    target = routing.route(store.prefix, sector.state, sector.kind, sector.host, urgent)
    delay = f" in {countdown:.3f}s" if countdown else ""
    store.note(
        sector.id,
        actor,
        "dispatch",
        f"queue={target['queue']} priority={target['priority']} host={sector.host or '-'}{delay}",
    )
    app.send_task(routing.task_name(sector.state), kwargs=kwargs, countdown=countdown)


def start(store: SectorStore, sector_id: str, actor: str = "sealpool") -> Sector:
    """Move a Pending sector into the pipeline and dispatch its first phase."""
    sector = store.move(sector_id, SectorState.ADD_PIECE, actor=actor, event="start")
    dispatch(store, sector, actor=actor)
    return sector
