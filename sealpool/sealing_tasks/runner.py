"""The life of one phase task: claim, compute under a kept lease, complete, route onward.

A task that cannot claim its sector (a second delivery of its message, a phase already
running or done) does nothing: the store's claim is the only door into a phase.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from sealpool.backends import Slot
from sealpool.errors import ChainError, PhaseError, StaleToken
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import Runtime
from sealpool.sealing_tasks.batched import Parked
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.sealing_tasks.lease_keeper import SHUTDOWN, LeaseKeeper
from sealpool.sealing_tasks.steps import STEPS, PhaseContext, seed_wait_s
from sealpool.store import TERMINAL, Lease, Sector, SectorState

log = logging.getLogger(__name__)
MAX_BACKOFF_WALL_S = 3600.0
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0
T = TypeVar("T")


def run_phase(
    runtime: Runtime,
    phase: SectorState,
    sector_id: str,
    worker: str,
    host: str,
    message: str | None = None,
) -> str:
    """Run ``phase`` of the sector on this worker, as asked by ``message`` (the Celery task
    id; None when called directly); returns what happened, in a word."""
    store = runtime.store
    if SHUTDOWN.is_set():  # a message that arrived as the worker stops: put it back
        if message and (fresh := store.reissue(sector_id, message, 0.0, "worker stopping")):
            _send(runtime, fresh, worker)
        return "handed back"
    bound = runtime.settings.host_binding and phase in TEMP_PHASES
    claim = store.claim(sector_id, phase, worker, host=host if bound else None, message=message)
    if claim is None:
        log.info("%s of %s not claimed by %s: taken, done or elsewhere", phase, sector_id, worker)
        return "skipped"
    sector = claim.sector
    with LeaseKeeper(store, claim) as keeper:
        try:
            with runtime.slot(sector_id, phase.value, lost=keeper.cancelled) as slot:
                context = PhaseContext(runtime, sector, phase, slot, keeper)
                updates = STEPS[phase](context)
        except Parked as parked:  # waits in a batch, without a slot; the batch moves it on
            return _park(runtime, keeper.lease, parked)
        except PhaseError as exc:
            if keeper.cancelled.is_set():
                return _hand_back(runtime, keeper.lease, keeper.reason or str(exc))
            return _failed(runtime, keeper.lease, sector, str(exc), exc.retry)
        except Exception as exc:  # a bug or an unexpected I/O error: record it, retry later
            log.exception("%s of %s crashed", phase, sector_id)
            return _failed(runtime, keeper.lease, sector, f"{type(exc).__name__}: {exc}", True)
        lease, deadline = keeper.lease, keeper.deadline
        if keeper.lost.is_set():  # finished, but after fencing itself: hand back if still ours
            return _hand_back(runtime, lease, keeper.reason)
    updates = _with_gpu_hold(updates, phase, slot)
    delay_s = _arrival_delay(runtime, phase, updates)
    try:
        done = _until_deadline(
            lambda: store.complete(lease, updates, detail=f"on {host}", delay_s=delay_s),
            deadline,
        )
    except StaleToken as exc:
        log.warning("%s", exc)
        return "lost"
    if done.state not in TERMINAL:
        _send(runtime, done, worker)
    return "done"


def _with_gpu_hold(updates: dict[str, Any], phase: SectorState, slot: Slot) -> dict[str, Any]:
    """``updates`` with the window the slot's GPU locks were held in (taken and released by
    the slot pool, on the server's clock) added to the phase's outputs as ``gpu_held``:
    when the phase had its shared GPUs to itself. Unchanged for a slot without GPU locks."""
    held = slot.gpu_hold.as_json() if slot.gpu_hold else None
    outputs = updates.get("outputs", {})
    if held is None or phase.value not in outputs:
        return updates
    mine = {**outputs[phase.value], "gpu_held": held}
    return {**updates, "outputs": {**outputs, phase.value: mine}}


def _until_deadline(call: Callable[[], T], deadline: float) -> T:
    """``call``, tried again while Redis is unreachable (a restart, a failover) until the
    lease's local deadline: a finished phase isn't thrown away for a short outage."""
    wait_s = RETRY_FIRST_S
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + wait_s > deadline:
                raise
            log.warning("Redis unreachable (%s); trying again in %.1f s", exc, wait_s)
            time.sleep(wait_s)
            wait_s = min(RETRY_MAX_S, 2 * wait_s)


def _arrival_delay(runtime: Runtime, phase: SectorState, updates: dict[str, Any]) -> float:
    """WaitSeed is sent to arrive when the seed is ready (at once if the chain can't say);
    every other phase at once."""
    if phase is not SectorState.PRE_COMMITTING:
        return 0.0
    try:
        return seed_wait_s(runtime, updates["outputs"][phase.value]["seed_epoch"])
    except ChainError:
        return 0.0


def _send(runtime: Runtime, sector: Sector, actor: str) -> None:
    dispatch(runtime.store, sector, actor=actor, bind_host=runtime.settings.host_binding)


def _hand_back(runtime: Runtime, lease: Lease, reason: str) -> str:
    """The phase was stopped (worker stopping, GPU lock lost, lease not renewable): release
    it and queue it again, to resume elsewhere or when this host is back."""
    try:
        released = runtime.store.release(lease, reason)
    except (StaleToken, redis.RedisError) as exc:  # taken over, or left to the supervisor
        log.warning("%s", exc)
        return "lost"
    _send(runtime, released, lease.worker)
    return "handed back"


def _park(runtime: Runtime, lease: Lease, parked: Parked) -> str:
    """Release the phase, its message left in the outbox until ``parked.delay_s``: only a
    supervisor sends it then (a safety net), if the batch has not moved the sector on."""
    try:
        runtime.store.release(lease, str(parked), delay_s=parked.delay_s)
    except (StaleToken, redis.RedisError) as exc:
        log.warning("%s", exc)
        return "lost"
    return "parked"


def _failed(runtime: Runtime, lease: Lease, sector: Sector, error: str, retry: bool) -> str:
    """Requeue the phase with exponential back-off, or fail the sector for good."""
    store, settings = runtime.store, runtime.settings
    attempts = sector.attempts.get(lease.phase.value, 1)
    retry = retry and attempts < settings.max_attempts
    reason = error if retry else f"{error} (after {attempts} attempts)" if attempts > 1 else error
    backoff = settings.wall_seconds(settings.retry_backoff_s * 2 ** (attempts - 1))
    try:
        failed = store.fail(lease, reason, retry=retry, delay_s=min(backoff, MAX_BACKOFF_WALL_S))
    except StaleToken as exc:
        log.warning("%s", exc)
        return "lost"
    if not retry:
        log.error("%s failed: %s", sector.id, reason)
        if sector.host:
            runtime.scratch.release(sector.host, sector.id)
        return "failed"
    _send(runtime, failed, lease.worker)
    return "retrying"
