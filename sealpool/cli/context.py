"""What every command shares: the settings and, opened on first use, the pool store."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from sealpool.config import Settings, load_settings
from sealpool.connection import connect, redis_url
from sealpool.runtime import Runtime, build_runtime
from sealpool.store import HistoryPolicy, SectorStore

F = TypeVar("F", bound=Callable[..., Any])
URL_VARIABLE = "SEALPOOL_REDIS_URL"


@dataclass
class CliContext:
    """Global options, turned into settings and a store only when a command needs them.

    ``start_embedded`` is whether the command may start the embedded server; commands that
    run until stopped turn it off (see :func:`long_running`).
    """

    config_file: Path | None = None
    overrides: dict[str, object] = field(default_factory=dict)
    start_embedded: bool = True

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_file, **self.overrides)

    @cached_property
    def pool_settings(self) -> Settings:
        """The settings with ``redis_url`` resolved to the server that holds the pool."""
        url = redis_url(self.settings, start_embedded=self.start_embedded)
        _broker_for_this_command(url)
        return self.settings.model_copy(update={"redis_url": url})

    @cached_property
    def runtime(self) -> Runtime:
        """Store, chain and backend of the pool, for commands that act on sectors."""
        return build_runtime(self.pool_settings)

    @cached_property
    def store(self) -> SectorStore:
        settings = self.pool_settings
        return SectorStore(
            connect(settings),
            prefix=settings.key_prefix,
            lease_s=settings.lease_s,
            request_id_ttl_s=settings.request_id_ttl_s,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            history=HistoryPolicy(settings.history_archive, settings.history_archive_days),
        )


pass_context = click.make_pass_decorator(CliContext)


def _broker_for_this_command(url: str) -> None:
    """Point the Celery app (which sends the command's phase messages and reads its broker
    from the environment) at the pool's server, for the command's duration."""
    command = click.get_current_context(silent=True)
    if command is None:
        return
    previous = os.environ.get(URL_VARIABLE)
    os.environ[URL_VARIABLE] = url

    def restore() -> None:
        if previous is None:
            os.environ.pop(URL_VARIABLE, None)
        else:
            os.environ[URL_VARIABLE] = previous

    command.call_on_close(restore)


def long_running(command: F) -> F:
    """Mark a command that runs until stopped: it never starts the embedded server (a host
    that silently made an empty pool of its own would wait for work forever), it needs
    ``redis_url`` or an embedded server already running in its data directory."""

    @functools.wraps(command)
    def marked(*args: Any, **kwargs: Any) -> Any:
        click.get_current_context().ensure_object(CliContext).start_embedded = False
        return command(*args, **kwargs)

    return marked  # type: ignore[return-value]
