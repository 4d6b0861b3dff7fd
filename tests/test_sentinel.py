"""Redis Sentinel: a farm on a primary, a replica and three sentinels rides out a failover."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
import redis

from sealpool import server
from sealpool.config import load_settings
from sealpool.connection import connect
from sealpool.errors import ConfigError, RedisUnavailable
from sealpool.farm import LocalFarm
from sealpool.runtime import runtime
from sealpool.store import SectorState, SectorStore

from farm_helpers import (
    answers,
    assert_never_twice_at_once,
    farm_env_vars,
    supervisor_process,
    wait_for,
    wait_running,
)
from helpers import wait_until

S = SectorState
MASTER = "mymaster"


class SentinelGroup:
    """A primary, a replica and three sentinels, each a process of the embedded binary with
    its own port and directory (AOF on); every one is killed on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def __enter__(self) -> SentinelGroup:
        try:
            self._node("primary")
            self._node("replica", "--replicaof", "127.0.0.1", str(self.ports["primary"]))
            for index in range(3):
                self._sentinel(f"sentinel{index}")
            wait_until(
                lambda: self.client("replica").info("replication")["master_link_status"] == "up",
                timeout_s=60,
                what="the replica in sync",
            )
            wait_until(
                lambda: all(
                    self.client(f"sentinel{i}").sentinel_master(MASTER)["num-other-sentinels"] == 2
                    for i in range(3)
                ),
                timeout_s=60,
                what="the sentinels aware of each other",
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{self.ports[f'sentinel{i}']}/0" for i in range(3))

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], decode_responses=True, socket_timeout=5)

    def primary_ports(self) -> set[int]:
        """The primary's port, as each sentinel names it."""
        return {
            int(self.client(f"sentinel{i}").sentinel_get_master_addr_by_name(MASTER)[1])
            for i in range(3)
        }

    def kill(self, name: str) -> None:
        """kill -9: no shutdown, no last AOF flush."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def _node(self, name: str, *args: str) -> None:
        self.ports[name] = port = server.free_port()
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        argv = [server.server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(folder), "--appendonly", "yes", "--save", "", *args]  # fmt: skip
        self._start(name, argv)

    def _sentinel(self, name: str) -> None:
        self.ports[name] = port = server.free_port()
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['primary']} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
        )
        self._start(name, [server.server_binary(), str(config), "--sentinel"])

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=log)
        client = self.client(name)
        wait_until(lambda: answers(client), timeout_s=30, what=f"{name} up")


def versions_once_readable(store: SectorStore, ids: list[str]) -> dict[str, int]:
    """Each sector's version, read as soon as the store's client reaches a primary."""
    versions: dict[str, int] = {}

    def read() -> bool:
        try:
            versions.update((s.id, s.version) for s in store.get_many(ids))
        except redis.ConnectionError:  # the sentinels' view of the primary is still settling
            return False
        return True

    wait_until(read, timeout_s=60, what="the store readable after the failover")
    return versions


@pytest.mark.slow
def test_a_sentinel_failover_mid_run_loses_nothing_and_runs_no_phase_twice(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store, broker and locks go through the sentinels; the primary is killed -9 while
    sectors run PC1. The replica is promoted, and workers and a `sealpool supervisor` process
    follow it: every sector reaches Proving, none lost, no phase claimed twice at once, and
    the phase transitions were WAITed for by the replica before the primary died."""
    with SentinelGroup(farm_env / "ha") as group:
        times = {"AddPiece": 100, "PreCommit1": 6000}
        env = {**farm_env_vars(times), "SEALPOOL_LEASE_S": "30", "SEALPOOL_TICK_S": "0.5",
               "SEALPOOL_REDIS_URL": group.url,
               "SEALPOOL_REDIS_SENTINEL_MASTER": MASTER}  # fmt: skip
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        runtime.cache_clear()  # (the test process sends no task: the supervisor process does)
        store = runtime(prefix).store
        assert store.wait_replicas == 1  # the default with a sentinel:// URL
        sectors = store.create_many("f01000", "cc", 4)
        ids = [sector.id for sector in sectors]
        with (
            supervisor_process(env, farm_env / "supervisor.log") as supervisor,
            LocalFarm(prefix, ["hostA"], farm_env / "farm", env=env),
        ):
            wait_running(store, ids, S.PRE_COMMIT_1)
            primary = group.client("primary")
            waits = primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
            before = {s.id: s.version for s in store.get_many(ids)}
            replica_port = group.ports["replica"]
            group.kill("primary")
            wait_until(
                lambda: group.primary_ports() == {replica_port},
                timeout_s=60,
                what="the sentinels promoted the replica",
            )
            after = versions_once_readable(store, ids)  # read from the new primary
            assert all(after[i] >= version for i, version in before.items())  # none lost
            done = wait_for(store, ids, timeout_s=240)
            assert supervisor.poll() is None, "the supervisor exited during the failover"
        assert [s.state for s in done] == [S.PROVING] * len(ids)
        assert waits > 0  # claims and completions waited for the replica
        assert_never_twice_at_once(store, ids)
        for sector_id in ids:  # every phase completed once: none redone, none lost
            completed = Counter(
                entry.from_state for entry in store.history(sector_id) if entry.event == "complete"
            )
            assert set(completed.values()) == {1}, (sector_id, completed)
        assert {s.id for s in store.list()} == set(ids)  # none lost, none made twice
    assert "Redis unavailable" in (farm_env / "supervisor.log").read_text()


def test_a_sentinel_url_is_checked_entry_by_entry() -> None:
    url = "sentinel://:pw@127.0.0.1:26379/0;sentinel://:pw@127.0.0.1:x"
    with pytest.raises(ConfigError, match=r"redis.url: .*bad port") as error:
        load_settings(redis_url=url)
    assert "pw" not in str(error.value)


def test_with_no_sentinel_answering_the_pool_is_unavailable_not_misconfigured() -> None:
    url = f"sentinel://:pw@127.0.0.1:{server.free_port()}/0"
    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at sentinel://:\*\*\*@127"):
        connect(load_settings(redis_url=url))
