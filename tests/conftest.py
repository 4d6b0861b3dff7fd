"""Fixtures: a private Redis server for the whole run, a fresh pool prefix per test.

The server comes from the embedded package (never 127.0.0.1:6379) unless
``SEALPOOL_REDIS_URL`` names one to use instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sealpool import server
from sealpool.store import SectorStore
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool, slot_holder

from helpers import wait_until


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.ServerInfo | None]:
    """The private embedded server of the run (None when SEALPOOL_REDIS_URL names one)."""
    if os.environ.get("SEALPOOL_REDIS_URL"):
        yield None
        return
    data_dir = tmp_path_factory.mktemp("redis")
    info = server.start(data_dir)
    yield info
    server.stop(data_dir)


@pytest.fixture(scope="session")
def redis_url(embedded_redis: server.ServerInfo | None) -> str:
    """URL of the Redis server the tests talk to."""
    return embedded_redis.url if embedded_redis else os.environ["SEALPOOL_REDIS_URL"]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of the test's own; its keys (and its queues) are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = [key for pattern in (f"{name}:*", f"{name}.*") for key in client.scan_iter(pattern)]
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


@pytest.fixture
def store(client: redis.Redis, prefix: str) -> SectorStore:
    return SectorStore(client, prefix=prefix, lease_s=30)


@pytest.fixture
def cli_env(redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment of CLI invocations: the test server and the test's prefix."""
    monkeypatch.setenv("SEALPOOL_REDIS_URL", redis_url)
    monkeypatch.setenv("SEALPOOL_KEY_PREFIX", prefix)
    monkeypatch.setenv("SEALPOOL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SEALPOOL_CONFIG", raising=False)
    return prefix


@pytest.fixture
def farm_env(
    redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Settings of a fast sim farm on host ``hostA`` for the test's pool; yields its root."""
    from sealpool.app import app
    from sealpool.runtime import runtime

    settings = {
        "REDIS_URL": redis_url, "KEY_PREFIX": prefix, "HOST": "hostA", "TIME_SCALE": "2000",
        "TEMP_DIRS": f'["{tmp_path}/hostA/temp"]', "SEALED_DIRS": f'["{tmp_path}/hostA/sealed"]',
        "TICKET_CONFIDENCE": "10", "RETRY_BACKOFF_S": "200", "LEASE_S": "10",
        "DATA_DIR": str(tmp_path / "data"), "SECTOR_SIZE": "2KiB",
        "PRECOMMIT_BATCH_WAIT_S": "0", "COMMIT_BATCH_WAIT_S": "0",  # each sector sent at once
    }  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(f"SEALPOOL_{name}", value)
    monkeypatch.delenv("SEALPOOL_CONFIG", raising=False)
    app.conf.broker_url = redis_url
    runtime.cache_clear()
    yield tmp_path
    runtime.cache_clear()


# A process that owns one slot of (host, phase) and heartbeats it until killed.
SLOT_HOLDER = """
import sys, redis
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool
url, pool, host, phase = sys.argv[1:]
client = redis.Redis.from_url(url, decode_responses=True)
SlotPool(client, pool, host, [SlotPlan(phase, 0, None, None, {})], [], [], 0.2).register()
sys.stdin.read()
"""


@pytest.fixture
def registered(client: redis.Redis, prefix: str) -> Iterator[Callable[..., SlotPool]]:
    """Register SlotPools of the test's pool (heartbeat 0.2 s); unregistered afterwards."""
    pools: list[SlotPool] = []

    def register(host: str, plans: list[SlotPlan], heartbeat_s: float = 0.2) -> SlotPool:
        slots = SlotPool(client, prefix, host, plans, [], [], heartbeat_s=heartbeat_s)
        slots.register()
        pools.append(slots)
        return slots

    yield register
    for slots in pools:
        slots.unregister()


@pytest.fixture
def other_process(redis_url: str, prefix: str) -> Iterator[Callable[[str, str], int]]:
    """Start another process that registers one slot of (host, phase); its pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(host: str, phase: str) -> int:
        argv = [sys.executable, "-c", SLOT_HOLDER, redis_url, prefix, host, phase]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE)
        started.append(process)
        token = f"{process.pid}@{socket.gethostname()}"
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: slot_holder(client, prefix, host, phase) == token, what="registered")
        return process.pid

    yield start
    for process in started:
        process.kill()
        process.wait()
