"""Keeps a phase's lease alive while the phase runs, and stops the phase once it can't.

Why a local deadline: a worker that can't reach Redis can't know whether its lease still
holds. Take this timeline (lease 60 s)::

    t=0    worker A claims PreCommit1 of f01000-7, lease until t=60
    t=10   A's host loses its network; renewals fail
    t=48   A's local deadline (renewal sent at t=0, plus 80 % of the lease): A fences itself
           — its processor's process group is killed, its slot and GPU lock released
    t=60   the lease expires in Redis; the supervisor takes the phase over
    t=61   worker B claims the phase; nothing of A's still writes to the sector's scratch

The deadline is counted on the monotonic clock from when the last successful renewal was
*sent*, so neither a clock step nor a slow reply can stretch it past the lease.
"""

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
DEADLINE_SHARE = 0.8  # a lease not renewed within this share of its length is given up


class LeaseKeeper:
    """Renews ``lease`` every third of its length from a background thread.

    ``lost`` is set once the lease is gone (another worker took the phase over, an operator
    moved the sector, or no renewal got through before the local deadline): the phase must
    then stop, as its result would be refused. ``cancelled`` is set then too, when the
    worker is shutting down, and when :meth:`cancel` is called (the slot lost its GPU
    lock): the phase stops and is handed back. ``reason`` says why.
    """

    def __init__(self, store: SectorStore, lease: Lease) -> None:
        self.store = store
        self.lease = lease
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self.reason = ""
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + DEADLINE_SHARE * store.lease_s
        self._thread = threading.Thread(
            target=self._renew_loop, daemon=True, name=f"lease-{lease.sector_id}"
        )
        self._watchdog = threading.Thread(
            target=self._watch_deadline, daemon=True, name=f"fence-{lease.sector_id}"
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._watchdog.join()
        self._thread.join(timeout=POLL_S)  # a renewal blocked on a dead server is left behind

    @property
    def deadline(self) -> float:
        """Monotonic time until which the lease is surely still ours (then it is fenced)."""
        return self._deadline

    def cancel(self, reason: str) -> None:
        """Stop the phase (it will be handed back) for ``reason``."""
        self.reason = self.reason or reason
        self.cancelled.set()

    def checkpoint(self, updates: Mapping[str, Any]) -> None:
        """Save progress with the lease (StaleToken when the lease is lost)."""
        with self._lock:
            self._renew(updates)

    def _renew(self, updates: Mapping[str, Any] | None = None) -> None:
        sent = time.monotonic()
        self.lease = self.store.renew(self.lease, updates=updates)
        self._deadline = sent + DEADLINE_SHARE * self.store.lease_s

    def _lose(self, reason: str) -> None:
        log.warning("%s of %s: %s", self.lease.phase, self.lease.sector_id, reason)
        self.reason = reason
        self.lost.set()
        self.cancelled.set()

    def _watch_deadline(self) -> None:
        """Fence the phase once the local deadline passes without a renewal."""
        while not self._stopped.wait(POLL_S):
            if SHUTDOWN.is_set():
                self.cancel("worker shutting down")
            if time.monotonic() > self._deadline and not self.lost.is_set():
                self._lose("lease not renewed before its local deadline: phase stopped")
                return

    def _renew_loop(self) -> None:
        interval = self.store.lease_s / 3
        next_renewal = time.monotonic() + interval
        while not self._stopped.wait(min(POLL_S, interval)) and not self.lost.is_set():
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + interval
            try:
                with self._lock:
                    self._renew()
            except StaleToken as exc:
                self._lose(f"lease lost ({exc})")
                return
            except redis.RedisError as exc:  # keep trying until the local deadline
                log.warning("renewing lease of %s failed: %s", self.lease.sector_id, exc)
