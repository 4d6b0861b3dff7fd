"""What a worker process builds once per pool: settings, store, chain, backend and slots.

A process started by ``sealpool worker`` runs one phase of one profile (``profile`` and
``worker_phase`` settings): the profile's host and storage, and the backend, processor and
sector size it names, replace the settings' (see sealpool.worker_profiles.effective), and its
slots for that phase are registered and lent to the running phases. Any other
process (a plain ``celery worker``, the tests) runs phases with the settings' storage and
no slot bookkeeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import psutil

from sealpool.backends import Backend, Slot, make_backend
from sealpool.chain import Chain, make_chain
from sealpool.config import Settings, load_settings
from sealpool.connection import connect
from sealpool.errors import ConfigError, PhaseError
from sealpool.storage import format_bytes, scratch_bytes, sector_dir
from sealpool.store import HistoryPolicy, SectorStore
from sealpool.store.scratch import ScratchLedger, ScratchPath
from sealpool.worker_profiles.effective import apply_profile
from sealpool.worker_profiles.model import load_profile
from sealpool.worker_profiles.plan import plan_profile
from sealpool.worker_profiles.slots import SlotPool


@dataclass(frozen=True)
class Runtime:
    """The collaborators of the phase tasks of one pool."""

    settings: Settings
    store: SectorStore
    chain: Chain
    backend: Backend
    scratch: ScratchLedger
    slots: SlotPool | None = None
    capacities: dict[str, int] | None = None
    chains: dict[str, Chain] = field(default_factory=dict)

    def chain_for(self, miner: str) -> Chain:
        """The chain as ``miner``'s actor sees it (``chain`` is the ``miner`` setting's):
        its messages, precommits and allocated numbers; the clock is the same."""
        if miner == self.chain.miner:
            return self.chain
        if miner not in self.chains:
            prefix = self.store.prefix
            self.chains[miner] = make_chain(self.settings, self.store.client, prefix, miner)
        return self.chains[miner]

    @contextmanager
    def slot(
        self, sector_id: str, phase: str, lost: threading.Event | None = None
    ) -> Iterator[Slot]:
        """The resources of one running phase: a profile slot, or the settings' storage.

        ``lost`` is set if the slot's GPU lock is lost while the phase runs (see
        :meth:`SlotPool.acquire`)."""
        if self.slots is None:
            settings = self.settings
            yield Slot(settings.host, tuple(settings.scratch_dirs), tuple(settings.store_dirs))
            return
        with self.slots.acquire(sector_id, phase, lost) as slot:
            yield slot

    def reserve_scratch(self, sector_id: str, slot: Slot) -> Path:
        """A temp directory for the sector on the path with the most headroom, reserved.

        The first try counts every other reservation as not yet written (no disk walk); only
        when that finds no room are the reserved sectors' temp directories measured.
        """
        host = slot.host
        paths = []
        for root in slot.temp_dirs:
            root.mkdir(parents=True, exist_ok=True)
            capacity = (self.capacities or {}).get(str(root))
            paths.append(ScratchPath(str(root), psutil.disk_usage(str(root)).free, capacity))
        need = scratch_bytes(self.settings.backend, self.settings.sector_size)
        chosen = self.scratch.reserve(host, sector_id, need, paths) or self.scratch.reserve(
            host, sector_id, need, paths, self._written(host)
        )
        if chosen is None:
            raise PhaseError(
                f"{sector_id}: no temp path on {host} has {format_bytes(need)} free for one more "
                "sector",
                retry=True,
            )
        return sector_dir(Path(chosen), sector_id)

    def _written(self, host: str) -> dict[str, int]:
        """Bytes already on disk for each sector holding a reservation on ``host``."""
        return {
            sector: _bytes_under(Path(path) / sector)
            for sector, (path, _size) in self.scratch.reservations(host).items()
        }


def _bytes_under(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(each.stat().st_size for each in path.rglob("*") if each.is_file())


@cache
def runtime(pool: str) -> Runtime:
    """The runtime of ``pool`` (a key prefix) for this process, built on first use."""
    return build_runtime(load_settings(), pool)


def build_runtime(settings: Settings, pool: str | None = None) -> Runtime:
    """A runtime from ``settings`` (and the profile they name) for ``pool``."""
    pool = pool or settings.key_prefix
    client = connect(settings)
    slots = capacities = None
    if settings.profile:
        path = settings.profile
        settings, profile = apply_profile(settings, load_profile(path), path)
        plan = plan_profile(profile, path)
        if plan.errors:
            raise ConfigError("\n".join(plan.errors))
        capacities = {str(e.path): e.capacity for e in profile.storage.temp if e.capacity}
        if settings.worker_phase:
            slots = SlotPool(
                client,
                pool,
                profile.host,
                plan.slots_for(settings.worker_phase),
                settings.scratch_dirs,
                settings.store_dirs,
                settings.heartbeat_s,
            )
    store = SectorStore(
        client,
        prefix=pool,
        lease_s=settings.lease_s,
        request_id_ttl_s=settings.request_id_ttl_s,
        wait_replicas=settings.wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
        history=HistoryPolicy(settings.history_archive, settings.history_archive_days),
    )
    return Runtime(
        settings,
        store,
        make_chain(settings, client, pool),
        make_backend(settings),
        ScratchLedger(client, pool),
        slots,
        capacities,
    )
