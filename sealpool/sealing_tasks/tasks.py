"""The Celery tasks, one per phase: ``sealpool.ap``, ``sealpool.pc1``, … ``sealpool.finalize``.

Every task takes the same keyword arguments, set by :func:`dispatch` and read by the router:
``pool`` (key prefix), ``sector_id``, ``kind``, ``host`` (binding, if any) and ``urgent``.
The worker's host is the ``host`` setting of its process (``SEALPOOL_HOST``), which
``sealpool worker`` also puts in the node name (``-n pc1@host-a``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import redis
from celery import Task
from celery.signals import (
    after_setup_logger,
    task_received,
    worker_init,
    worker_shutdown,
    worker_shutting_down,
)

from sealpool import routing
from sealpool.app import app
from sealpool.config import load_settings
from sealpool.errors import SlotsInUse
from sealpool.runtime import Runtime, runtime
from sealpool.sealing_tasks.dispatch import dispatch
from sealpool.sealing_tasks.lease_keeper import SHUTDOWN
from sealpool.sealing_tasks.runner import run_phase
from sealpool.sealing_tasks.steps import seed_wait_s
from sealpool.store import PhaseStatus, SectorState
from sealpool.worker_profiles.slots import SlotPool, holder_name

TASK_LINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace")  # received, succeeded


def run_here(rt: Runtime, phase: SectorState, sector_id: str, message: str) -> str:
    """Run the phase as this worker: its host, and an id naming host, process and thread."""
    host = rt.settings.host
    worker = f"{host}:{os.getpid()}-{threading.get_native_id()}"
    return run_phase(rt, phase, sector_id, worker, host, message)


def _phase_task(phase: SectorState) -> Task:
    @app.task(name=routing.task_name(phase), bind=True)
    def run(task: Task, pool: str, sector_id: str, **_route: Any) -> str:
        return run_here(runtime(pool), phase, sector_id, task.request.id)

    run.__doc__ = f"Run {phase} of a sector."
    return run


PHASE_TASKS = {
    phase: _phase_task(phase) for phase in routing.QUEUE_NAMES if phase is not SectorState.WAIT_SEED
}


@app.task(name=routing.task_name(SectorState.WAIT_SEED), bind=True)
def wait_seed(task: Task, pool: str, sector_id: str, **_route: Any) -> str:
    """Take the seed once the chain is past seed epoch + confidence; until then, look again
    later (a new message with a countdown, not a sleeping worker slot)."""
    rt = runtime(pool)
    sector = rt.store.get(sector_id)
    if sector.msg_id != task.request.id or sector.status is not PhaseStatus.QUEUED:
        return "skipped"
    wait_s = seed_wait_s(rt, sector.outputs["PreCommitting"]["seed_epoch"])
    if wait_s > 0:
        later = rt.store.reissue(sector_id, task.request.id, wait_s, "seed not ready yet")
        if later is not None:
            dispatch(rt.store, later, actor="waitseed")
        return "waiting"
    return run_here(rt, SectorState.WAIT_SEED, sector_id, task.request.id)


def _own_slots() -> SlotPool | None:
    """The slots of this process, when ``sealpool worker`` started it for one phase."""
    settings = load_settings()
    return runtime(settings.key_prefix).slots if settings.worker_phase else None


@task_received.connect
def _note_held_countdown(request: Any, **_: Any) -> None:
    """A phase message taken to wait in this process's timer (a countdown) is recorded
    with its holder, so that the supervisor replaces it if this process dies."""
    if request.name not in routing.TASK_PHASES or request.eta is None:
        return
    kwargs = request.kwargs
    rt = runtime(kwargs["pool"])
    if rt.slots is None:  # not a `sealpool worker` process: no owner to check
        return
    with contextlib.suppress(redis.RedisError):  # then the supervisor finds it in time
        rt.store.message_held(kwargs["sector_id"], request.id, holder_name(rt.slots))


@worker_init.connect
def _register_slots(**_: Any) -> None:
    """A ``sealpool worker`` process owns and announces its slots before it consumes; it
    exits with one line if another live process holds them (an orphan of a killed
    launcher): a slot is run by one process only. (SystemExit: Celery's signal dispatch
    would log any other exception and consume anyway.)"""
    slots = _own_slots()
    if slots is not None:
        try:
            slots.register()
        except SlotsInUse as exc:
            raise SystemExit(str(exc)) from None


@after_setup_logger.connect
def _quiet_task_lines(**_: Any) -> None:
    """Leave Celery's per-task INFO lines out of the worker log unless ``log_each_task``."""
    if not load_settings().log_each_task:
        for name in TASK_LINE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@worker_shutting_down.connect
def _stop_phases(**_: Any) -> None:
    """Warm shutdown: running phases stop and hand their sectors back."""
    SHUTDOWN.set()


@worker_shutdown.connect
def _unregister_slots(**_: Any) -> None:
    slots = _own_slots()
    if slots is not None:
        slots.unregister()
