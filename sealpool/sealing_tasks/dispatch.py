"""Sending a sector's phase message, and finding messages that were never sent or got lost.

The store decides *which* message a queued phase has (its id, and when it may run) in the
same script that queues the phase; this module only delivers it, as a Celery task whose id
is the message id, then marks it sent. Two deliveries of one id are harmless (one claim
wins); a crash between the store's move and the send leaves the message in the outbox,
where :func:`deliver_outbox` finds it. A message the broker lost (a worker took it and died
before claiming) is found by :func:`recover_lost` and replaced by a new id, so the old one
can never run if it turns up after all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sealpool import routing
from sealpool.app import PRIORITY_SEP, PRIORITY_STEPS, app
from sealpool.store import WORK_PHASES, Sector, SectorStore

URGENT_PRIORITY = 0


def dispatch(
    store: SectorStore,
    sector: Sector,
    *,
    actor: str = "sealpool",
    bind_host: bool = True,
    now_ms: int | None = None,
) -> bool:
    """Send the sector's live message (none: nothing to send); whether it counts as sent.

    The router picks queue and priority; the countdown is what remains until the message's
    not-before time, counted from ``now_ms`` (server time) or from the record's last change.
    ``bind_host=False`` sends temp phases to the shared queue (``host_binding`` off).
    """
    if not sector.msg_id or sector.msg_at_ms is None:
        return False
    urgent = sector.priority == URGENT_PRIORITY
    host = sector.host if bind_host else None
    target = routing.route(store.prefix, sector.state, sector.kind, host, urgent)
    countdown = max(0.0, (sector.msg_at_ms - (now_ms or sector.updated_ms)) / 1000)
    app.send_task(
        routing.task_name(sector.state),
        kwargs={
            "pool": store.prefix,
            "sector_id": sector.id,
            "kind": sector.kind,
            "host": host,
            "urgent": urgent,
        },
        task_id=sector.msg_id,
        countdown=countdown or None,
        argsrepr="()",
        kwargsrepr=f"{{'sector_id': {sector.id!r}}}",  # what logs and Flower show
    )
    delay = f" in {countdown:.3f}s" if countdown else ""
    return store.message_sent(
        sector, f"queue={target['queue']} priority={target['priority']} by {actor}{delay}"
    )


def start(
    store: SectorStore,
    sector_id: str,
    actor: str = "sealpool",
    leader: str | None = None,
    host: str | None = None,
) -> Sector:
    """Move a Pending sector into the pipeline (bound to ``host``, if given) and send its
    first phase."""
    sector = store.start(sector_id, actor=actor, leader=leader, host=host)
    dispatch(store, sector, actor=actor)
    return sector


def deliver_outbox(store: SectorStore, *, actor: str, bind_host: bool, grace_ms: int) -> list[str]:
    """Send every message still in the outbox ``grace_ms`` after it was due (its sender
    crashed, or the broker was away); the sector ids sent."""
    now = store.now_ms()
    sent = []
    for sector in store.get_many(store.outbox(now - grace_ms)):
        if dispatch(store, sector, actor=actor, bind_host=bind_host, now_ms=now):
            sent.append(sector.id)
    return sent


def recover_lost(
    store: SectorStore,
    *,
    actor: str,
    bind_host: bool,
    lost_ms: int,
    hosts: Iterable[str],
    holder_alive: Callable[[str], bool] = lambda _holder: False,
) -> list[str]:
    """Replace the messages due for ``lost_ms`` and still not claimed, unless they wait in
    a queue (a backlog) or a live worker process holds them for a countdown (recorded as
    their holder, ``holder_alive``); the sector ids re-sent.

    Any other such message is lost: nowhere in the broker (a worker took it and died before
    its claim), or delivered to a worker that is gone (the broker would give it back only
    after its visibility timeout). Its replacement has a new id, so the old one can never
    run if it turns up after all.
    """
    now = store.now_ms()
    sectors = [
        s for s in store.get_many(store.unclaimed(now - lost_ms)) if s.msg_id and s.msg_sent_ms
    ]
    queued, delivered = store.in_broker(
        [s.msg_id for s in sectors if s.msg_id], queue_lists(store.prefix, hosts)
    )
    waiting = queued | {
        s.msg_id
        for s in sectors
        if s.msg_id in delivered and s.msg_holder is not None and holder_alive(s.msg_holder)
    }
    store.recheck_unclaimed([s.id for s in sectors if s.msg_id in waiting], now)
    resent = []
    for sector in sectors:
        if sector.msg_id in waiting or sector.msg_id is None:
            continue
        why = "its worker is gone" if sector.msg_id in delivered else "not in the broker"
        fresh = store.reissue(sector.id, sector.msg_id, 0.0, f"lost: {why}")
        if fresh is not None:
            dispatch(store, fresh, actor=actor, bind_host=bind_host)
            resent.append(sector.id)
    return resent


def queue_lists(pool: str, hosts: Iterable[str]) -> list[str]:
    """The broker's lists of every queue of the pool (shared and on ``hosts``), one per
    Redis priority step (``<queue>`` for step 0, ``<queue>:<step>`` for the others)."""
    queues = [routing.queue_name(pool, phase) for phase in WORK_PHASES]
    for host in sorted(set(hosts)):
        queues += [routing.queue_name(pool, phase, host) for phase in routing.TEMP_PHASES]
    return [
        queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"
        for queue in queues
        for step in PRIORITY_STEPS
    ]
