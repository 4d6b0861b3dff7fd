"""Slots at run time against a real Redis: the server's clock, busy shares, slots that always
come back, lost GPU locks, one owner process per slot, and liveness per host and phase."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from sealpool import server
from sealpool.errors import SlotsInUse
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import (
    SlotPool,
    check_free,
    live_consumers,
    lost_hosts,
    server_ms,
    slot_holder,
    slot_reports,
)

from helpers import cpu_slots, wait_until

GPU_SLOT = SlotPlan("PreCommit2", 0, None, (0,), {}, ("gpu-0",))


def pass_ms(client: redis.Redis, ms: int) -> None:
    """Wait until ``ms`` milliseconds have passed on the server's clock."""
    began = server_ms(client)
    wait_until(lambda: server_ms(client) > began + ms, what=f"{ms} ms on the server's clock")


def attempt(slots: SlotPool, inside: Callable[[], object] = lambda: None) -> Exception | None:
    """Borrow a slot in a thread and run ``inside`` with it; what that raised, if anything.

    Fails when the borrower still waits for a free slot after 30 s: one was never returned.
    """
    outcome: list[Exception | None] = []

    def borrow() -> None:
        try:
            with slots.acquire("f01000-1", slots.phase):
                inside()
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=borrow, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome, "acquire still waits for a free slot after 30 s: a slot was lost"
    return outcome[0]


def test_slot_times_are_the_servers_even_when_this_clock_is_an_hour_off(
    client: redis.Redis,
    registered: Callable[..., SlotPool],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skewed = time.time
    monkeypatch.setattr(time, "time", lambda: skewed() + 3600)
    slots = registered("box", cpu_slots("PreCommit1", 1))
    with slots.acquire("f01000-1", "PreCommit1"):
        (busy,) = slot_reports(client, prefix)
        assert busy.since_ms is not None
        assert abs(busy.since_ms - server_ms(client)) < 5000
        assert 0.0 <= busy.busy_share <= 1.0


def test_busy_shares_stay_between_0_and_1_across_a_worker_restart(
    client: redis.Redis, registered: Callable[..., SlotPool], prefix: str
) -> None:
    first = SlotPool(client, prefix, "box", cpu_slots("PreCommit1", 2), [], [], heartbeat_s=0.2)
    first.register()
    for sector in ("f01000-1", "f01000-2"):
        with first.acquire(sector, "PreCommit1"):
            pass_ms(client, 50)
    first.unregister()
    pass_ms(client, 50)  # the restart comes later than the busy intervals
    second = registered("box", cpu_slots("PreCommit1", 2))
    assert [r.busy_share for r in slot_reports(client, prefix)] == [0.0, 0.0]
    with second.acquire("f01000-3", "PreCommit1"):
        pass_ms(client, 50)
    shares = sorted(r.busy_share for r in slot_reports(client, prefix))
    assert shares[0] == 0.0 and 0.0 < shares[1] <= 1.0


def test_a_slot_comes_back_when_redis_is_unreachable(prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        dead = redis.Redis(port=sock.getsockname()[1], socket_connect_timeout=1)
        slots = SlotPool(dead, prefix, "box", [GPU_SLOT], [], [])
        for _ in range(2):  # with the slot lost, the second borrower would wait for ever
            assert isinstance(attempt(slots), redis.ConnectionError)


def test_a_slot_comes_back_when_its_gpu_lock_cannot_be_taken(
    client: redis.Redis, redis_url: str, prefix: str
) -> None:
    user = f"{prefix}-nolocks"
    client.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=[f"{prefix}:slot:*", f"{prefix}:slotbusy:*"],  # not the GPU lock
        categories=["+@all"],
    )
    try:
        denied = redis.Redis.from_url(redis_url, username=user, password="pw")
        slots = SlotPool(denied, prefix, "box", [GPU_SLOT], [], [])
        for _ in range(2):
            assert isinstance(attempt(slots), redis.exceptions.NoPermissionError)
    finally:
        client.acl_deluser(user)


def test_a_slot_comes_back_when_its_state_cannot_be_written(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    slots = SlotPool(client, prefix, "box", [GPU_SLOT], [], [])
    client.set(f"{prefix}:slot:box|PreCommit2|0", "not a hash")  # busy state: WRONGTYPE
    for _ in range(2):
        assert isinstance(attempt(slots), redis.ResponseError)
    client.delete(f"{prefix}:slot:box|PreCommit2|0")
    assert not client.exists(f"{prefix}:gpulock:box:gpu-0")
    with caplog.at_level(logging.WARNING):  # the idle state and interval after the phase
        busy_key = f"{prefix}:slotbusy:box|PreCommit2|0"
        assert attempt(slots, lambda: client.set(busy_key, "not a sorted set")) is None
    assert "idle state not saved" in caplog.text
    assert not client.exists(f"{prefix}:gpulock:box:gpu-0")
    assert attempt(slots) is None


def test_a_gpu_lock_taken_away_sets_lost(
    client: redis.Redis,
    registered: Callable[..., SlotPool],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = registered("box", [GPU_SLOT], heartbeat_s=1.0)  # a 3 s lock: a late beat keeps it
    lost = threading.Event()
    key = f"{prefix}:gpulock:box:gpu-0"
    with caplog.at_level(logging.WARNING), slots.acquire("f01000-1", "PreCommit2", lost):
        assert client.exists(key)
        left = [client.pttl(key)]

        def renewed() -> bool:  # the lock's time to live went up: the heartbeat renewed it
            left.append(client.pttl(key))
            return left[-1] > left[-2]

        wait_until(renewed, what="the heartbeat renewed the GPU lock")
        assert not lost.is_set()
        client.set(f"{prefix}:gpulock:box:gpu-0", "another owner")
        assert lost.wait(30)
    assert "lost GPU lock" in caplog.text
    assert client.get(f"{prefix}:gpulock:box:gpu-0") == "another owner"  # not ours to free


def test_a_gpu_lock_not_renewed_before_it_expires_sets_lost(tmp_path: Path, prefix: str) -> None:
    info = server.start(tmp_path / "redis")
    try:
        private = redis.Redis.from_url(
            info.url, decode_responses=True, socket_connect_timeout=1, socket_timeout=1
        )
        slots = SlotPool(private, prefix, "box", [GPU_SLOT], [], [], heartbeat_s=0.2)
        slots.register()
        lost = threading.Event()
        with slots.acquire("f01000-1", "PreCommit2", lost):
            server.stop(tmp_path / "redis")
            assert lost.wait(60)
        server.start(tmp_path / "redis")
        slots.unregister()
    finally:
        server.stop(tmp_path / "redis")


def test_a_second_process_for_the_same_slots_is_refused_until_the_first_exits(
    client: redis.Redis, prefix: str, other_process: Callable[[str, str], int]
) -> None:
    pid = other_process("box", "PreCommit1")
    holder = f"{pid}@{socket.gethostname()}"
    mine = SlotPool(client, prefix, "box", cpu_slots("PreCommit1", 1), [], [], heartbeat_s=0.2)
    with pytest.raises(SlotsInUse) as refused:
        mine.register()
    assert str(refused.value).startswith(f"PreCommit1 slots of box are held by process {holder}")
    with pytest.raises(SlotsInUse):
        check_free(client, prefix, "box", "PreCommit1")
    check_free(client, prefix, "box", "PreCommit2")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: slot_holder(client, prefix, "box", "PreCommit1") is None, what="exited")
    mine.register()  # at once: the holder's pid is gone from this machine
    assert (
        slot_holder(client, prefix, "box", "PreCommit1") == f"{os.getpid()}@{socket.gethostname()}"
    )
    mine.unregister()
    assert not client.exists(f"{prefix}:slotowner:box|PreCommit1")


def test_a_holder_on_another_machine_is_waited_out(client: redis.Redis, prefix: str) -> None:
    client.set(f"{prefix}:slotowner:box|PreCommit1", "4242@another-machine", px=1500)
    mine = SlotPool(client, prefix, "box", cpu_slots("PreCommit1", 1), [], [], heartbeat_s=0.2)
    with pytest.raises(SlotsInUse, match="held by process 4242@another-machine"):
        mine.register()
    wait_until(lambda: not client.exists(f"{prefix}:slotowner:box|PreCommit1"), what="expired")
    mine.register()
    mine.unregister()


def test_live_consumers_and_lost_hosts(
    client: redis.Redis,
    registered: Callable[..., SlotPool],
    prefix: str,
    other_process: Callable[[str, str], int],
) -> None:
    host_a = registered("hostA", cpu_slots("PreCommit1", 2))
    pid = other_process("hostB", "PreCommit2")
    live = {("hostA", "PreCommit1"), ("hostB", "PreCommit2")}
    assert live_consumers(client, prefix, 5.0) == live
    assert lost_hosts(client, prefix, 5.0) == set()
    os.kill(pid, signal.SIGKILL)  # hostB dies: its slots stay registered, its beats stop
    wait_until(lambda: lost_hosts(client, prefix, 1.0) == {"hostB"}, what="hostB lost")
    assert live_consumers(client, prefix, 1.0) == {("hostA", "PreCommit1")}
    assert client.hget(f"{prefix}:hosts", "hostA") is not None
    host_a.unregister()  # a clean stop is neither live nor lost
    assert live_consumers(client, prefix, 1.0) == set()
    assert lost_hosts(client, prefix, 1.0) == {"hostB"}
