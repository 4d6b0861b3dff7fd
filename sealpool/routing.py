"""Routing of phase tasks: which queue and which priority (the ``task_routes`` setting).

* Every phase has a queue, ``<pool>.<phase>``. Phases that read or write a sector's temp
  files (AddPiece, PreCommit1, PreCommit2, Commit1, Finalize) go to ``<pool>.<phase>@<host>``
  once the sector is bound to a host, so temp data never crosses machines. The first of them
  is taken from the shared queue, and the claim binds the sector to the taker's host.
  Commit2 needs only the small Commit1 output: it stays on the shared queue of any GPU host.
* Priorities are Redis priority steps, 0 first. Deal sectors take steps 0-4, CC sectors 5-9;
  within a class the sector furthest along goes first (finish work before starting new),
  and an urgent sector (deadline at risk, raised by an operator) takes step 0.

Routing is a pure function of the task's keyword arguments: no I/O, usable as a Celery
router and testable without a broker.
"""

from __future__ import annotations

from typing import Any

from sealpool.store import SectorState

S = SectorState

QUEUE_NAMES: dict[SectorState, str] = {
    S.ADD_PIECE: "ap",
    S.PRE_COMMIT_1: "pc1",
    S.PRE_COMMIT_2: "pc2",
    S.PRE_COMMITTING: "precommit",
    S.WAIT_SEED: "waitseed",
    S.COMMIT_1: "c1",
    S.COMMIT_2: "c2",
    S.COMMITTING: "provecommit",
    S.FINALIZE: "finalize",
}
TASK_PHASES: dict[str, SectorState] = {f"sealpool.{q}": phase for phase, q in QUEUE_NAMES.items()}
TEMP_PHASES: frozenset[SectorState] = frozenset(
    {S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.COMMIT_1, S.FINALIZE}
)
CLASS_BASE: dict[str, int] = {"deal": 0, "cc": 5}
STAGE_RANK: dict[SectorState, int] = {
    S.FINALIZE: 0, S.COMMITTING: 0, S.COMMIT_2: 1, S.COMMIT_1: 1, S.WAIT_SEED: 1,
    S.PRE_COMMITTING: 2, S.PRE_COMMIT_2: 2, S.PRE_COMMIT_1: 3, S.ADD_PIECE: 4,
}  # fmt: skip


def task_name(phase: SectorState) -> str:
    """The Celery task that runs ``phase``."""
    return f"sealpool.{QUEUE_NAMES[phase]}"


def queue_name(pool: str, phase: SectorState, host: str | None = None) -> str:
    """``<pool>.<phase>``, or the host-bound ``<pool>.<phase>@<host>``."""
    base = f"{pool}.{QUEUE_NAMES[phase]}"
    return f"{base}@{host}" if host else base


def host_queues(pool: str, phases: list[SectorState], host: str) -> list[str]:
    """Every queue a worker on ``host`` running ``phases`` consumes: shared and own."""
    queues = [queue_name(pool, phase) for phase in phases]
    queues += [queue_name(pool, phase, host) for phase in phases if phase in TEMP_PHASES]
    return queues


def priority(phase: SectorState, kind: str, urgent: bool = False) -> int:
    """Redis priority step of the phase's message: 0 runs first."""
    return 0 if urgent else CLASS_BASE[kind] + STAGE_RANK[phase]


def route(
    pool: str, phase: SectorState, kind: str, host: str | None = None, urgent: bool = False
) -> dict[str, Any]:
    """Queue and priority of the message that runs ``phase`` of a sector."""
    bound = host if phase in TEMP_PHASES else None
    return {"queue": queue_name(pool, phase, bound), "priority": priority(phase, kind, urgent)}


def route_task(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    task: Any = None,
    **_: Any,
) -> dict[str, Any] | None:
    """Celery router: routes sealpool phase tasks from their keyword arguments."""
    phase = TASK_PHASES.get(name)
    if phase is None:
        return None
    return route(
        kwargs["pool"], phase, kwargs["kind"], kwargs.get("host"), bool(kwargs.get("urgent"))
    )
