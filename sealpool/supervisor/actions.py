"""Operator actions on one sector: retry a failed one, resume it at a phase, abort it."""

from __future__ import annotations

from sealpool.errors import IllegalTransition
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.store import PIPELINE, WORK_PHASES, Sector, SectorState


def resume(rt: Runtime, sector_id: str, phase: SectorState, actor: str = "operator") -> Sector:
    """Queue the sector at ``phase`` — from Failed, or back from a later work phase — and
    send it. The outputs of ``phase`` and every later phase are dropped (a precommit resumed
    sends a new message instead of waiting on the failed one)."""
    if phase not in WORK_PHASES:
        raise IllegalTransition(f"{sector_id}: can't resume at {phase}: not a work phase")
    sector = rt.store.get(sector_id)
    later = PIPELINE[PIPELINE.index(phase) + 1 :]
    kept = {
        name: value
        for name, value in sector.outputs.items()
        if SectorState(name) not in later and name != phase.value
    }
    resumed = rt.store.move(
        sector_id,
        phase,
        actor=actor,
        event="resume",
        detail=f"resumed at {phase}",
        updates={"last_error": None, "outputs": kept},
        sources={SectorState.FAILED, *(state for state in later if state in WORK_PHASES)},
        expected_version=sector.version,
    )
    dispatch(rt.store, resumed, actor=actor, bind_host=rt.settings.host_binding)
    return resumed


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
