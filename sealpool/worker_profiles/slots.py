"""Slots at run time: handing a profile's slots to running phases, and reporting them.

Every slot of a ``sealpool worker`` process is registered in Redis and heartbeats its state
(idle or busy, which sector, since when) under a key that expires after three missed
heartbeats, so a host that stops heartbeating shows as lost. Each beat also stamps
``<pool>:consumers`` (field ``host|phase``) and ``<pool>:hosts`` (field ``host``), which
:func:`live_consumers` and :func:`lost_hosts` read. Busy intervals are kept for an hour to
give each slot's busy share. A slot of a phase paused on its host (``<pool>:paused``, see
sealpool.worker_control) shows as paused, or draining while its last phase runs. GPUs
shared by exclusive phases are guarded by Redis locks that the heartbeat keeps alive (and
that expire if the process dies). One process at a time owns a phase's slots on a host
(:class:`SlotOwner`). Every time stored or compared is the Redis server's
(:class:`ServerClock`), so hosts with skewed clocks agree.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from sealpool.backends import GpuHold, Slot
from sealpool.errors import SlotsInUse
from sealpool.worker_profiles.plan import SlotPlan

HOUR_MS = 3600_000
log = logging.getLogger(__name__)


def server_ms(client: redis.Redis) -> int:
    """Milliseconds since the epoch on the Redis server's clock (one ``TIME``)."""
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


class ServerClock:
    """The Redis server's clock: read with ``TIME`` at each :meth:`sync` (register and every
    heartbeat) and carried forward by ``time.monotonic`` in between, so reading it costs no
    round trip and a host whose own clock is off still stamps the pool's time."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._offset_ms: float | None = None

    def sync(self) -> int:
        """Read the server's time; it, in milliseconds."""
        now = server_ms(self.client)
        self._offset_ms = now - time.monotonic() * 1000
        return now

    def now_ms(self) -> int:
        """The server's time in milliseconds, from the last :meth:`sync` (one if none yet)."""
        if self._offset_ms is None:
            return self.sync()
        return int(time.monotonic() * 1000 + self._offset_ms)


class SlotKeys:
    """Redis key names of a pool's slots."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.registry = f"{pool}:slots"
        self.consumers = f"{pool}:consumers"
        self.hosts = f"{pool}:hosts"
        self.paused = f"{pool}:paused"

    @staticmethod
    def slot_id(host: str, phase: str, index: int) -> str:
        return f"{host}|{phase}|{index}"

    def state(self, slot_id: str) -> str:
        return f"{self.pool}:slot:{slot_id}"

    def busy(self, slot_id: str) -> str:
        return f"{self.pool}:slotbusy:{slot_id}"

    def gpu_lock(self, host: str, name: str) -> str:
        return f"{self.pool}:gpulock:{host}:{name}"

    def owner(self, host: str, phase: str) -> str:
        return f"{self.pool}:slotowner:{host}|{phase}"


def _exited_here(holder: str) -> bool:
    """Whether ``holder`` (``pid@machine``) was a process of this machine that has exited."""
    pid, _, machine = holder.partition("@")
    if machine != socket.gethostname() or not pid.isdigit():
        return False
    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _in_use(host: str, phase: str, holder: str) -> SlotsInUse:
    return SlotsInUse(
        f"{phase} slots of {host} are held by process {holder}: another worker process "
        "for them is still running"
    )


class SlotOwner:
    """One process's claim on the slots of one phase of one host.

    Two processes lending the same slots would run twice the phases the slots allow, on the
    same cores and GPUs. It happens when a launcher is killed and its orphaned worker still
    runs as a new one starts:

        t0  orphan O holds hostA|PreCommit1 and heartbeats it
        t1  new worker N registers: the key names O, so N refuses to start
        t2  O dies; its key expires three heartbeats later (at once for N if O ran on N's
            machine: N sees O's pid is gone)
        t3  N, started again, takes the key

    The key holds the owner's token, ``pid@machine``, and expires after ``ttl_ms``; the
    heartbeat extends it, a clean stop deletes it.
    """

    # KEYS[1] the owner key; ARGV[1] our token, ARGV[2] TTL in ms, ARGV[3] a holder known
    # to have exited ('' for none). Sets the key to our token when it is free, ours or the
    # exited holder's; returns the holder after the call.
    TAKE = """
    local holder = redis.call('get', KEYS[1])
    if not holder or holder == ARGV[1] or holder == ARGV[3] then
        redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
        return ARGV[1]
    end
    return holder
    """
    # KEYS[1] the owner key; ARGV[1] our token. Deletes the key if it is ours; 1 if it was.
    RELEASE = """
    if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
    return 0
    """

    def __init__(self, client: redis.Redis, pool: str, host: str, phase: str, ttl_ms: int) -> None:
        self.host, self.phase, self.ttl_ms = host, phase, ttl_ms
        self.key = SlotKeys(pool).owner(host, phase)
        self.token = f"{os.getpid()}@{socket.gethostname()}"
        self._take = client.register_script(self.TAKE)
        self._release = client.register_script(self.RELEASE)

    def take(self, client: redis.Redis | None = None, exited: str = "") -> str:
        """Take or extend the key (on ``client``, a pipeline maybe); the holder after."""
        return self._take([self.key], [self.token, self.ttl_ms, exited], client=client)

    def claim(self) -> None:
        """Own the key, taking it from a holder that has exited; SlotsInUse if it is held."""
        holder = self.take()
        if holder != self.token and _exited_here(holder):
            holder = self.take(exited=holder)
        if holder != self.token:
            raise _in_use(self.host, self.phase, holder)

    def release(self) -> None:
        self._release([self.key], [self.token])


def slot_holder(client: redis.Redis, pool: str, host: str, phase: str) -> str | None:
    """The live process (``pid@machine``) that owns ``phase``'s slots on ``host``, if any."""
    holder = client.get(SlotKeys(pool).owner(host, phase))
    return None if holder is None or _exited_here(holder) else holder


def check_free(client: redis.Redis, pool: str, host: str, phase: str) -> None:
    """SlotsInUse, naming the holder, if a live process owns ``phase``'s slots on ``host``."""
    if holder := slot_holder(client, pool, host, phase):
        raise _in_use(host, phase, holder)


@dataclass
class _Loan:
    """A slot lent to one running phase."""

    sector: str
    since_ms: int
    lost: threading.Event | None
    locks: dict[Lock, float] = field(default_factory=dict)  # → monotonic time of last renewal
    hold: GpuHold | None = None


@contextmanager
def _pinned(cores: tuple[int, ...] | None) -> Iterator[None]:
    """The calling thread pinned to ``cores`` (if any) until the block ends."""
    original = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, original)


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
        phases = {plan.phase for plan in plans}
        if len(phases) != 1:
            raise ValueError(f"a SlotPool lends the slots of one phase, got {sorted(phases)}")
        self.client, self.host, self.plans = client, host, list(plans)
        self.phase = phases.pop()
        self.keys = SlotKeys(pool)
        self.temp_dirs, self.sealed_dirs = tuple(temp_dirs), tuple(sealed_dirs)
        self.heartbeat_s = heartbeat_s
        self.clock = ServerClock(client)
        self.owner = SlotOwner(client, pool, host, self.phase, self.ttl_s * 1000)
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self.plans)):
            self._free.put(index)
        self._loans: dict[int, _Loan] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _id(self, index: int) -> str:
        plan = self.plans[index]
        return SlotKeys.slot_id(self.host, plan.phase, plan.index)

    @property
    def ttl_s(self) -> int:
        return max(1, int(3 * self.heartbeat_s))

    def register(self) -> None:
        """Own, announce and start heartbeating the slots; SlotsInUse if another live
        process owns them."""
        self.owner.claim()
        now = self.clock.sync()
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
        pipe = self.client.pipeline(transaction=False)
        pipe.hdel(self.keys.registry, *ids)
        pipe.delete(*(self.keys.state(slot_id) for slot_id in ids))
        pipe.hdel(self.keys.consumers, f"{self.host}|{self.phase}")
        pipe.execute()
        self.owner.release()

    @contextmanager
    def acquire(
        self, sector_id: str, phase: str, lost: threading.Event | None = None
    ) -> Iterator[Slot]:
        """A free slot for the sector's phase, with its GPU locks held and the calling
        thread pinned to its cores, until the block ends.

        ``lost`` is set if a GPU lock of the slot is lost meanwhile (taken by another owner,
        or not renewed before it expired): the phase no longer has the GPU to itself. A
        Redis error while taking the slot raises; the slot goes back to the free ones
        whatever happens. A slot with GPU locks carries a :class:`GpuHold` whose window
        is filled in as the locks are taken and released.
        """
        index = self._free.get()
        try:
            plan = self.plans[index]
            hold = GpuHold(self.host, plan.locks) if plan.locks else None
            with self._lent(index, sector_id, lost, hold), _pinned(plan.cores):
                yield Slot(
                    self.host,
                    self.temp_dirs,
                    self.sealed_dirs,
                    plan.cores,
                    plan.gpus,
                    dict(plan.env),
                    hold,
                )
        finally:
            self._free.put(index)

    @contextmanager
    def _lent(
        self,
        index: int,
        sector_id: str,
        lost: threading.Event | None,
        hold: GpuHold | None = None,
    ) -> Iterator[None]:
        """The slot marked busy with its GPU locks held; idle and unlocked afterwards.

        ``hold`` gets the window the locks were all held in, on the server's clock.
        """
        loan = _Loan(sector_id, self.clock.now_ms(), lost, hold=hold)
        self._loans[index] = loan  # from here on the heartbeat renews the locks it holds
        try:
            self._save(index)
            for name in self.plans[index].locks:
                lock = self.client.lock(
                    self.keys.gpu_lock(self.host, name), timeout=self.ttl_s, thread_local=False
                )
                lock.acquire(blocking=True)
                loan.locks[lock] = time.monotonic()
            if hold is not None:
                hold.from_ms = server_ms(self.client)  # after the last lock was taken
            yield
        finally:
            del self._loans[index]
            if hold is not None and hold.from_ms is not None:
                hold.to_ms = self._before_unlock()
            for lock in list(loan.locks):
                self._unlock(loan, lock)
            self._save_idle(index, loan)

    def _before_unlock(self) -> int:
        """The server's time before the GPU locks are released: read there when Redis
        answers (so it precedes the release), else this process's estimate of it."""
        try:
            return server_ms(self.client)
        except redis.RedisError:
            return self.clock.now_ms()

    def _unlock(self, loan: _Loan, lock: Lock) -> None:
        loan.locks.pop(lock, None)  # first: a renewal failing from here on is no loss
        try:
            lock.release()
        except redis.RedisError as exc:
            log.warning("GPU lock %s not released (it expires by itself): %s", lock.name, exc)

    def _save(self, index: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._write(pipe, index)
        pipe.execute()

    def _save_idle(self, index: int, loan: _Loan) -> None:
        """Record the busy interval and the idle state; on a Redis error the next heartbeat
        writes the state, and only the interval is missing from the busy share."""
        busy_key = self.keys.busy(self._id(index))
        now = self.clock.now_ms()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(busy_key, {f"{loan.since_ms}-{now}": now})
            pipe.zremrangebyscore(busy_key, "-inf", now - HOUR_MS)
            self._write(pipe, index)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "slot %s: idle state not saved, the heartbeat retries: %s", self._id(index), exc
            )

    def _write(self, pipe: redis.client.Pipeline, index: int) -> None:
        """Queue the saving of the slot's state on ``pipe``."""
        loan = self._loans.get(index)
        state = {
            "state": "busy" if loan else "idle",
            "sector": loan.sector if loan else "",
            "since_ms": loan.since_ms if loan else 0,
            "phase": self.plans[index].phase,
        }
        key = self.keys.state(self._id(index))
        pipe.hset(key, mapping=state)
        pipe.expire(key, self.ttl_s)

    def _beat(self) -> None:
        """Save every slot's state, stamp this consumer and host, and keep the ownership."""
        now = self.clock.sync()
        pipe = self.client.pipeline(transaction=False)
        for index in range(len(self.plans)):
            self._write(pipe, index)
        pipe.hset(self.keys.consumers, f"{self.host}|{self.phase}", now)
        pipe.hset(self.keys.hosts, self.host, now)
        self.owner.take(pipe)
        holder = pipe.execute()[-1]
        if holder != self.owner.token:
            log.error("%s", _in_use(self.host, self.phase, holder))

    def _renew_locks(self) -> None:
        """Extend every held GPU lock; one that can't be is lost to its phase."""
        for loan in list(self._loans.values()):
            for lock, renewed in list(loan.locks.items()):
                try:
                    lock.reacquire()
                    loan.locks[lock] = time.monotonic()
                except LockNotOwnedError:
                    self._lose(loan, lock, "another owner took it or it expired")
                except redis.RedisError as exc:
                    if time.monotonic() - renewed > self.ttl_s:
                        self._lose(loan, lock, f"not renewed for {self.ttl_s}s: {exc}")

    def _lose(self, loan: _Loan, lock: Lock, why: str) -> None:
        if loan.locks.pop(lock, None) is None:
            return  # released meanwhile: the phase ended
        log.warning("%s of %s lost GPU lock %s (%s)", self.phase, loan.sector, lock.name, why)
        if loan.hold is not None:
            loan.hold.lost = True
        if loan.lost is not None:
            loan.lost.set()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError as exc:
                log.warning("slot heartbeat of %s on %s failed: %s", self.phase, self.host, exc)
            self._renew_locks()


# Slot states: taking work (idle, busy), paused (idle, not taking work), draining (running
# its last phase, then paused), lost (no heartbeat).
CONSUMING = frozenset({"idle", "busy"})
RUNNING = frozenset({"busy", "draining"})
PAUSED_STATES = {"idle": "paused", "busy": "draining"}


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
    last_run_ms: int | None = None  # how long the slot's last finished run took


def live_slots(reports: Sequence[SlotReport]) -> dict[str, int]:
    """How many slots of each phase take work (idle or busy: not paused, draining or lost)."""
    counts: dict[str, int] = {}
    for report in reports:
        if report.state in CONSUMING:
            counts[report.phase] = counts.get(report.phase, 0) + 1
    return counts


def slot_reports(client: redis.Redis, pool: str) -> list[SlotReport]:
    """Every registered slot: idle, busy, paused, draining or lost (no heartbeat), with its
    busy share and its last run's length."""
    keys = SlotKeys(pool)
    now = server_ms(client)
    registry = client.hgetall(keys.registry)
    paused = client.hgetall(keys.paused)
    ids = sorted(registry, key=lambda s: (s.split("|")[0], s.split("|")[1], int(s.split("|")[2])))
    pipe = client.pipeline(transaction=False)
    for slot_id in ids:
        pipe.hgetall(keys.state(slot_id))
        pipe.zrangebyscore(keys.busy(slot_id), now - HOUR_MS, "+inf")
    replies = pipe.execute()
    reports = []
    for position, slot_id in enumerate(ids):
        state, intervals = replies[2 * position], replies[2 * position + 1]
        info = json.loads(registry[slot_id])
        host, phase, index = slot_id.split("|")
        since = int(state["since_ms"]) if state.get("since_ms") else None
        spans = [tuple(map(int, member.split("-"))) for member in intervals]
        last_run = spans[-1][1] - spans[-1][0] if spans else None  # ordered by their end
        if state.get("state") == "busy" and since:
            spans.append((since, now))
        window_start = max(now - HOUR_MS, info["registered_ms"])
        shown = state.get("state", "lost")
        if f"{host}|{phase}" in paused:
            shown = PAUSED_STATES.get(shown, shown)
        reports.append(SlotReport(
            host=host, phase=phase, index=int(index), state=shown,
            sector=state.get("sector") or None, since_ms=since or None,
            busy_share=_busy_share(spans, window_start, now),
            cores=info["cores"], gpus=info["gpus"], last_run_ms=last_run,
        ))  # fmt: skip
    return reports


def _busy_share(spans: Sequence[tuple[int, int]], start_ms: int, end_ms: int) -> float:
    """The share of [start_ms, end_ms] covered by the busy ``spans``, each clipped to it.

    A span from before the window (kept across a worker restart, which moves the window's
    start to the new registration) counts nothing rather than a negative time.
    """
    busy = sum(max(0, min(end, end_ms) - max(start, start_ms)) for start, end in spans)
    return min(1.0, busy / max(1, end_ms - start_ms))


def live_consumers(client: redis.Redis, pool: str, within_s: float) -> set[tuple[str, str]]:
    """The (host, phase) pairs whose worker process heartbeat within ``within_s`` seconds."""
    now = server_ms(client)
    beats = client.hgetall(SlotKeys(pool).consumers)
    return {
        (host, phase)
        for consumer, at in beats.items()
        if now - int(at) <= within_s * 1000
        for host, phase in [consumer.split("|", 1)]
    }


def holder_name(slots: SlotPool) -> str:
    """How a process running ``slots`` names itself as a message's holder."""
    return f"{slots.host}|{slots.phase}|{slots.owner.token}"


def holder_alive(client: redis.Redis, pool: str, holder: str) -> bool:
    """Whether the process named ``holder`` (:func:`holder_name`) still owns its slots."""
    host, phase, token = holder.split("|", 2)
    return slot_holder(client, pool, host, phase) == token


def lost_hosts(client: redis.Redis, pool: str, grace_s: float) -> set[str]:
    """Hosts with slots registered but no worker process that heartbeat within ``grace_s``."""
    registered = {slot_id.split("|", 1)[0] for slot_id in client.hkeys(SlotKeys(pool).registry)}
    return registered - {host for host, _phase in live_consumers(client, pool, grace_s)}
