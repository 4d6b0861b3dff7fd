"""The supervisor's loop: tick every ``tick_s``, riding out Redis outages.

A farm's Redis may restart (an upgrade, a failover, a crash). The loop then logs one line
per failed attempt and tries again with exponential back-off (1 s doubling to 30 s) instead
of exiting: a systemd unit never hits its start limit, and the supervisor is back within
seconds of Redis. Every action of a tick is fenced in the store, so a tick cut short by an
outage leaves nothing half done that the next tick can't finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from sealpool.errors import RedisUnavailable
from sealpool.supervisor.tick import Supervisor, TickReport

log = logging.getLogger(__name__)
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0


def run_supervisor(
    build: Callable[[], Supervisor],
    tick_s: float,
    on_tick: Callable[[TickReport], None],
    ticks: int | None = None,
) -> Supervisor | None:
    """Build the supervisor (once Redis answers) and tick ``ticks`` times, or for ever;
    the supervisor, to resign with."""
    boss: Supervisor | None = None
    done, retry_s = 0, FIRST_RETRY_S
    while ticks is None or done < ticks:
        try:
            boss = boss or build()
            on_tick(boss.tick())
        except (redis.RedisError, RedisUnavailable) as exc:
            log.warning("supervisor: Redis unavailable (%s); retrying in %.0f s", exc, retry_s)
            time.sleep(retry_s)
            retry_s = min(MAX_RETRY_S, retry_s * 2)
            continue
        done, retry_s = done + 1, FIRST_RETRY_S
        if ticks is None or done < ticks:
            time.sleep(tick_s)
    return boss
