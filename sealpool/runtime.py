"""What a worker process builds once per pool: settings, store, chain and backend."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sealpool.backends import Backend, Slot, make_backend
from sealpool.chain import Chain, make_chain
from sealpool.config import Settings, load_settings
from sealpool.connection import connect
from sealpool.store import SectorStore


@dataclass(frozen=True)
class Runtime:
    """The collaborators of the phase tasks of one pool."""

    settings: Settings
    store: SectorStore
    chain: Chain
    backend: Backend

    def slot(self, host: str) -> Slot:
        """The resources of a phase running on ``host``: the configured storage."""
        return Slot(
            host=host,
            temp_dirs=tuple(self.settings.scratch_dirs),
            sealed_dirs=tuple(self.settings.store_dirs),
        )


@cache
def runtime(pool: str) -> Runtime:
    """The runtime of ``pool`` (a key prefix), built on first use in this process."""
    settings = load_settings()
    client = connect(settings)
    store = SectorStore(
        client, prefix=pool, lease_s=settings.lease_s, request_id_ttl_s=settings.request_id_ttl_s
    )
    return Runtime(settings, store, make_chain(settings, client, pool), make_backend(settings))
