"""One place that turns settings into a live Redis client.

Only one-shot commands (``sealpool sectors …``, ``server start``, the demo) may start the
embedded server. A long-running process (``sealpool worker``, ``supervisor``, ``exporter``,
a Celery worker) uses ``redis_url`` or an embedded server already running in ``data_dir``:
a worker host that silently started an empty pool of its own would seal nothing, unnoticed.
A ``sentinel://`` URL gives a client of the primary the sentinels name, which follows
failovers (see sealpool.sentinel).
"""

from __future__ import annotations

from typing import Any

import redis

from sealpool import sentinel, server
from sealpool.config import Settings
from sealpool.errors import RedisUnavailable, ServerError
from sealpool.secrets import redact_url


def redis_url(settings: Settings, *, start_embedded: bool = False) -> str:
    """The configured server's URL, else the embedded server's in ``data_dir``: started when
    ``start_embedded``, otherwise it must be running already."""
    if settings.redis_url:
        return settings.redis_url
    if start_embedded:
        return server.start(settings.data_dir).url
    running = server.status(settings.data_dir)
    if running is None:
        raise ServerError(
            "no Redis: set SEALPOOL_REDIS_URL or run `sealpool server start` first "
            f"(no embedded server runs in {settings.data_dir})"
        )
    return running.url


def connect(settings: Settings) -> redis.Redis:
    """A client for the pool's server (never starting one), checked with a PING so failures
    surface here."""
    url = redis_url(settings)
    try:
        client = _client(url, settings.redis_sentinel_master)
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError, ValueError) as exc:
        raise ServerError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    except redis.RedisError as exc:  # down, unreachable or mid-failover: it may come back
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client


def _client(url: str, service: str) -> redis.Redis:
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    if sentinel.is_sentinel(url):
        return sentinel.primary(url, service, socket_keepalive=True, **options)
    return redis.Redis.from_url(url, **options)
