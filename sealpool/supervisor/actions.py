"""Operator actions on one sector: retry a failed one, resume it at a phase, abort it."""

from __future__ import annotations

from sealpool.errors import IllegalTransition
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.store import Sector, SectorState


def resume(rt: Runtime, sector_id: str, phase: SectorState, actor: str = "operator") -> Sector:
    """Queue the sector at ``phase`` (from Failed, or a legal step back) and dispatch it."""
    sector = rt.store.move(
        sector_id,
        phase,
        actor=actor,
        event="resume",
        detail=f"resumed at {phase}",
        updates={"last_error": None},
    )
    dispatch(rt.store, sector, actor=actor)
    return sector


def retry(rt: Runtime, sector_id: str, actor: str = "operator") -> Sector:
    """Resume a Failed sector at the phase that failed."""
    sector = rt.store.get(sector_id)
    if sector.state is not SectorState.FAILED or not sector.failed_phase:
        raise IllegalTransition(
            f"{sector_id}: only a Failed sector can be retried (it is {sector.state})"
        )
    return resume(rt, sector_id, SectorState(sector.failed_phase), actor)


def abort(rt: Runtime, sector_id: str, actor: str = "operator") -> Sector:
    """Abort the sector for good; its scratch reservation is freed."""
    sector = rt.store.move(
        sector_id, SectorState.ABORTED, actor=actor, event="abort", detail="aborted by operator"
    )
    if sector.host:
        rt.scratch.release(sector.host, sector_id)
    return sector
