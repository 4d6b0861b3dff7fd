"""Redis Sentinel: a pool URL that names sentinels, which say where the primary is.

The form is kombu's (Celery's ``broker_url`` for Sentinel), so one URL serves the store and
the broker: ``sentinel://[[user]:password@]host:port[/db][;sentinel://host:port…]``. The
password, user and db of the first entry are the primary's; the sentinels themselves are
asked without them. The primary's name is the ``redis_sentinel_master`` setting (Celery's
``master_name`` transport option). After a failover the clients' connection pools ask the
sentinels again and reconnect to the new primary (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from sealpool.secrets import redact_url

SCHEME = "sentinel"
SENTINEL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a ``sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names sentinels rather than one server."""
    return url.startswith(f"{SCHEME}://")


def parse(url: str) -> SentinelUrl:
    """The sentinels, db and primary's credentials of ``url`` (ValueError saying what's
    wrong, without the password)."""
    entries = [entry for entry in url.split(";") if entry]
    sentinels = []
    for entry in entries:
        parts = urlsplit(entry)
        if parts.scheme != SCHEME or not parts.hostname:
            raise ValueError(f"{redact_url(entry)!r} is not sentinel://host:port")
        try:
            port = parts.port or 26379
        except ValueError:
            raise ValueError(f"{redact_url(entry)!r} has a bad port") from None
        sentinels.append((parts.hostname, port))
    first = urlsplit(entries[0])
    db = first.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the db of {redact_url(entries[0])!r} must be a number")
    return SentinelUrl(
        tuple(sentinels),
        int(db),
        unquote(first.username) if first.username else None,
        unquote(first.password) if first.password else None,
    )


def primary(url: str, service: str, **options: Any) -> redis.Redis:
    """A client of the primary that the sentinels of ``url`` name for ``service``; it
    follows failovers (``options`` go to each connection)."""
    parsed = parse(url)
    timeouts = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    sentinel = Sentinel(
        list(parsed.sentinels),
        sentinel_kwargs=timeouts,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
    )
    return sentinel.master_for(service, **options)
