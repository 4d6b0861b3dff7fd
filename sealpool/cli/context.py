"""What every command shares: the settings and, opened on first use, the pool store."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import click

from sealpool.config import Settings, load_settings
from sealpool.connection import connect
from sealpool.runtime import Runtime, build_runtime
from sealpool.store import SectorStore


@dataclass
class CliContext:
    """Global options, turned into settings and a store only when a command needs them."""

    config_file: Path | None = None
    overrides: dict[str, object] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_file, **self.overrides)

    @cached_property
    def runtime(self) -> Runtime:
        """Store, chain and backend of the pool, for commands that act on sectors."""
        return build_runtime(self.settings)

    @cached_property
    def store(self) -> SectorStore:
        settings = self.settings
        return SectorStore(
            connect(settings),
            prefix=settings.key_prefix,
            lease_s=settings.lease_s,
            request_id_ttl_s=settings.request_id_ttl_s,
        )


pass_context = click.make_pass_decorator(CliContext)
