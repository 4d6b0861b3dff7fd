"""One place that turns settings into a live Redis client."""

from __future__ import annotations

import redis

from sealpool import server
from sealpool.config import Settings
from sealpool.errors import ServerError


def redis_url(settings: Settings) -> str:
    """The configured server's URL, starting the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url
    return server.start(settings.data_dir).url


def connect(settings: Settings) -> redis.Redis:
    """A client for the pool's server, checked with a PING so failures surface here."""
    url = redis_url(settings)
    client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServerError(f"cannot reach Redis at {_redacted(url)}: {exc}") from None
    return client


def _redacted(url: str) -> str:
    """The URL without its password, fit for an error line."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
