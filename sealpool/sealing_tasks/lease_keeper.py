"""Keeps a phase's lease alive while the phase runs, and notices when it is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from sealpool.errors import StaleToken
from sealpool.store import Lease, SectorStore

log = logging.getLogger(__name__)
SHUTDOWN = threading.Event()  # set when this worker process is asked to stop
POLL_S = 0.25


class LeaseKeeper:
    """Renews ``lease`` every third of its length from a background thread.

    ``lost`` is set once the lease is gone (another worker took the phase over, or an
    operator moved the sector): the phase must then stop, as its result would be refused.
    ``cancelled`` is set then too, and when the worker is shutting down: the phase stops and
    is handed back.
    """

    def __init__(self, store: SectorStore, lease: Lease) -> None:
        self.store = store
        self.lease = lease
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._renew_loop, daemon=True, name=f"lease-{lease.sector_id}"
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join()

    def checkpoint(self, updates: Mapping[str, Any]) -> None:
        """Save progress with the lease (StaleToken when the lease is lost)."""
        with self._lock:
            self.lease = self.store.renew(self.lease, updates=updates)

    def _renew_loop(self) -> None:
        interval = self.store.lease_s / 3
        next_renewal = time.monotonic() + interval
        while not self._stopped.wait(min(POLL_S, interval)):
            if SHUTDOWN.is_set():
                self.cancelled.set()
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + interval
            try:
                with self._lock:
                    self.lease = self.store.renew(self.lease)
            except StaleToken:
                log.warning("lease on %s of %s lost", self.lease.phase, self.lease.sector_id)
                self.lost.set()
                self.cancelled.set()
                return
            except redis.RedisError as exc:  # keep trying: the lease outlives short outages
                log.warning("renewing lease of %s failed: %s", self.lease.sector_id, exc)
