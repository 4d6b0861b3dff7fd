"""Slots at run time: handing a profile's slots to running phases, and reporting them.

Every slot of a ``sealpool worker`` process is registered in Redis and heartbeats its state
(idle or busy, which sector, since when) under a key that expires after three missed
heartbeats, so a host that stops heartbeating shows as lost. Busy intervals are kept for an
hour to give each slot's busy share. GPUs shared by exclusive phases are guarded by Redis
locks that the heartbeat keeps alive (and that expire if the process dies).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.lock import Lock

from sealpool.backends import Slot
from sealpool.worker_profiles.plan import SlotPlan

HOUR_MS = 3600_000


def _now_ms() -> int:
    return int(time.time() * 1000)


class SlotKeys:
    """Redis key names of a pool's slots."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.registry = f"{pool}:slots"

    @staticmethod
    def slot_id(host: str, phase: str, index: int) -> str:
        return f"{host}|{phase}|{index}"

    def state(self, slot_id: str) -> str:
        return f"{self.pool}:slot:{slot_id}"

    def busy(self, slot_id: str) -> str:
        return f"{self.pool}:slotbusy:{slot_id}"

    def gpu_lock(self, host: str, name: str) -> str:
        return f"{self.pool}:gpulock:{host}:{name}"


class SlotPool:
    """The slots of one phase on one host, lent to running phases one at a time."""

    def __init__(
        self,
        client: redis.Redis,
        pool: str,
        host: str,
        plans: Sequence[SlotPlan],
        temp_dirs: Sequence[Path],
        sealed_dirs: Sequence[Path],
        heartbeat_s: float = 5.0,
    ) -> None:
        self.client, self.host, self.plans = client, host, list(plans)
        self.keys = SlotKeys(pool)
        self.temp_dirs, self.sealed_dirs = tuple(temp_dirs), tuple(sealed_dirs)
        self.heartbeat_s = heartbeat_s
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self.plans)):
            self._free.put(index)
        self._busy: dict[int, tuple[str, int]] = {}
        self._held_locks: dict[int, list[Lock]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _id(self, index: int) -> str:
        plan = self.plans[index]
        return SlotKeys.slot_id(self.host, plan.phase, plan.index)

    @property
    def ttl_s(self) -> int:
        return max(1, int(3 * self.heartbeat_s))

    def register(self) -> None:
        """Announce the slots and start heartbeating them."""
        now = _now_ms()
        entries = {
            self._id(i): json.dumps({"cores": plan.cores, "gpus": plan.gpus, "registered_ms": now})
            for i, plan in enumerate(self.plans)
        }
        self.client.hset(self.keys.registry, mapping=entries)
        self._beat()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, daemon=True, name="slot-heartbeat"
        )
        self._thread.start()

    def unregister(self) -> None:
        """Stop heartbeating and remove the slots (a clean shutdown is not a lost host)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        ids = [self._id(i) for i in range(len(self.plans))]
        self.client.hdel(self.keys.registry, *ids)
        self.client.delete(*(self.keys.state(slot_id) for slot_id in ids))

    @contextmanager
    def acquire(self, sector_id: str, phase: str) -> Iterator[Slot]:
        """A free slot for the sector's phase, with its GPU locks held and the calling
        thread pinned to its cores, until the block ends."""
        index = self._free.get()
        plan = self.plans[index]
        locks = [
            self.client.lock(
                self.keys.gpu_lock(self.host, name), timeout=self.ttl_s, thread_local=False
            )
            for name in plan.locks
        ]
        for lock in locks:
            lock.acquire(blocking=True)
        self._held_locks[index] = locks
        self._busy[index] = (sector_id, _now_ms())
        pipe = self.client.pipeline(transaction=False)
        self._write(pipe, index)
        pipe.execute()
        original = os.sched_getaffinity(0)
        if plan.cores:
            os.sched_setaffinity(0, plan.cores)
        try:
            yield Slot(
                self.host, self.temp_dirs, self.sealed_dirs, plan.cores, plan.gpus, dict(plan.env)
            )
        finally:
            os.sched_setaffinity(0, original)
            for lock in self._held_locks.pop(index, []):
                if lock.owned():
                    lock.release()
            _sector, since = self._busy.pop(index)
            busy_key = self.keys.busy(self._id(index))
            now = _now_ms()
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(busy_key, {f"{since}-{now}": now})
            pipe.zremrangebyscore(busy_key, "-inf", now - HOUR_MS)
            self._write(pipe, index)
            pipe.execute()
            self._free.put(index)

    def _write(self, pipe: redis.client.Pipeline, index: int) -> None:
        """Queue the saving of the slot's state on ``pipe``."""
        sector, since = self._busy.get(index, ("", 0))
        state = {
            "state": "busy" if sector else "idle",
            "sector": sector,
            "since_ms": since,
            "phase": self.plans[index].phase,
        }
        key = self.keys.state(self._id(index))
        pipe.hset(key, mapping=state)
        pipe.expire(key, self.ttl_s)

    def _beat(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for index in range(len(self.plans)):
            self._write(pipe, index)
        pipe.execute()
        for locks in list(self._held_locks.values()):
            for lock in locks:
                lock.reacquire()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError:
                continue  # Redis away for a moment: the next beat tries again


@dataclass(frozen=True)
class SlotReport:
    """One registered slot as ``sealpool workers`` shows it."""

    host: str
    phase: str
    index: int
    state: str
    sector: str | None
    since_ms: int | None
    busy_share: float
    cores: list[int] | None
    gpus: list[int] | None


def live_slots(reports: Sequence[SlotReport]) -> dict[str, int]:
    """How many slots of each phase are registered and not lost."""
    counts: dict[str, int] = {}
    for report in reports:
        if report.state != "lost":
            counts[report.phase] = counts.get(report.phase, 0) + 1
    return counts


def slot_reports(client: redis.Redis, pool: str) -> list[SlotReport]:
    """Every registered slot: idle, busy or lost (no heartbeat), with its busy share."""
    keys = SlotKeys(pool)
    registry = client.hgetall(keys.registry)
    ids = sorted(registry, key=lambda s: (s.split("|")[0], s.split("|")[1], int(s.split("|")[2])))
    pipe = client.pipeline(transaction=False)
    for slot_id in ids:
        pipe.hgetall(keys.state(slot_id))
        pipe.zrangebyscore(keys.busy(slot_id), _now_ms() - HOUR_MS, "+inf")
    replies = pipe.execute()
    now = _now_ms()
    reports = []
    for position, slot_id in enumerate(ids):
        state, intervals = replies[2 * position], replies[2 * position + 1]
        info = json.loads(registry[slot_id])
        host, phase, index = slot_id.split("|")
        window_start = max(now - HOUR_MS, info["registered_ms"])
        busy = sum(
            min(end, now) - max(start, window_start)
            for start, end in (map(int, member.split("-")) for member in intervals)
        )
        since = int(state["since_ms"]) if state.get("since_ms") else None
        if state.get("state") == "busy" and since:
            busy += now - max(since, window_start)
        reports.append(SlotReport(
            host=host, phase=phase, index=int(index), state=state.get("state", "lost"),
            sector=state.get("sector") or None, since_ms=since or None,
            busy_share=min(1.0, busy / max(1, now - window_start)),
            cores=info["cores"], gpus=info["gpus"],
        ))  # fmt: skip
    return reports
