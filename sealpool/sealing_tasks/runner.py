"""The life of one phase task: claim, compute under a kept lease, complete, route onward.

A task that cannot claim its sector (a second delivery of its message, a phase already
running or done) does nothing: the store's claim is the only door into a phase.
"""

from __future__ import annotations

import logging

from sealpool.errors import ChainError, PhaseError, StaleToken
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.sealing_tasks.lease_keeper import SHUTDOWN, LeaseKeeper
from sealpool.sealing_tasks.steps import STEPS, PhaseContext, seed_wait_s
from sealpool.store import TERMINAL, Lease, PhaseStatus, Sector, SectorState

log = logging.getLogger(__name__)
MAX_BACKOFF_WALL_S = 3600.0


def run_phase(runtime: Runtime, phase: SectorState, sector_id: str, worker: str, host: str) -> str:
    """Run ``phase`` of the sector on this worker; returns what happened, in a word."""
    store = runtime.store
    if SHUTDOWN.is_set():  # a message that arrived as the worker stops: put it back
        sector = store.get(sector_id)
        if sector.state is phase and sector.status is PhaseStatus.QUEUED:
            _send(runtime, sector, worker)
        return "handed back"
    bound = runtime.settings.host_binding and phase in TEMP_PHASES
    claim = store.claim(sector_id, phase, worker, host=host if bound else None)
    if claim is None:
        log.info("%s of %s not claimed by %s: taken, done or elsewhere", phase, sector_id, worker)
        return "skipped"
    sector = claim.sector
    with LeaseKeeper(store, claim) as keeper, runtime.slot(sector_id, phase.value) as slot:
        context = PhaseContext(runtime, sector, phase, slot, keeper)
        try:
            updates = STEPS[phase](context)
        except PhaseError as exc:
            if SHUTDOWN.is_set() and not keeper.lost.is_set():
                return _hand_back(runtime, keeper.lease)
            return _failed(runtime, keeper.lease, sector, str(exc), exc.retry)
        except Exception as exc:  # a bug or an unexpected I/O error: record it, retry later
            log.exception("%s of %s crashed", phase, sector_id)
            return _failed(runtime, keeper.lease, sector, f"{type(exc).__name__}: {exc}", True)
        lease = keeper.lease
    try:
        done = store.complete(lease, updates, detail=f"on {host}")
    except StaleToken as exc:
        log.warning("%s", exc)
        return "lost"
    if done.state not in TERMINAL:
        _send(runtime, done, worker, countdown=_arrival_delay(runtime, done))
    return "done"


def _arrival_delay(runtime: Runtime, sector: Sector) -> float | None:
    """WaitSeed is sent to arrive when the seed is ready (at once if the chain can't say);
    every other phase at once."""
    if sector.state is not SectorState.WAIT_SEED:
        return None
    try:
        return seed_wait_s(runtime, sector) or None
    except ChainError:
        return None


def _send(runtime: Runtime, sector: Sector, actor: str, countdown: float | None = None) -> None:
    dispatch(
        runtime.store,
        sector,
        actor=actor,
        countdown=countdown,
        bind_host=runtime.settings.host_binding,
    )


def _hand_back(runtime: Runtime, lease: Lease) -> str:
    """The worker is stopping: release the phase and queue it again, to resume elsewhere or
    when this host is back."""
    try:
        released = runtime.store.release(lease, "worker shutting down")
    except StaleToken:
        return "lost"
    _send(runtime, released, lease.worker)
    return "handed back"


def _failed(runtime: Runtime, lease: Lease, sector: Sector, error: str, retry: bool) -> str:
    """Requeue the phase with exponential back-off, or fail the sector for good."""
    store, settings = runtime.store, runtime.settings
    attempts = sector.attempts.get(lease.phase.value, 1)
    retry = retry and attempts < settings.max_attempts
    reason = error if retry else f"{error} (after {attempts} attempts)" if attempts > 1 else error
    try:
        store.fail(lease, reason, retry=retry)
    except StaleToken as exc:
        log.warning("%s", exc)
        return "lost"
    if not retry:
        log.error("%s failed: %s", sector.id, reason)
        if sector.host:
            runtime.scratch.release(sector.host, sector.id)
        return "failed"
    backoff = settings.wall_seconds(settings.retry_backoff_s * 2 ** (attempts - 1))
    _send(runtime, store.get(sector.id), lease.worker, countdown=min(backoff, MAX_BACKOFF_WALL_S))
    return "retrying"
