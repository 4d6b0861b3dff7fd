"""Reliability: chaos, Redis restarts and outages, bad input, security."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpool import server
from sealpool.app import app
from sealpool.backends import ExternalBackend, PhaseRequest, Slot
from sealpool.config import load_settings
from sealpool.connection import connect
from sealpool.errors import ConfigError, InvalidSectorId, PhaseError, ServerError
from sealpool.farm import LocalFarm
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import SectorState, parse_sector_id
from sealpool.supervisor import Supervisor
from sealpool.worker_profiles.model import load_profile

from farm_helpers import (
    answers,
    assert_never_twice_at_once,
    events,
    farm_env_vars,
    supervisor_process,
    wait_for,
    wait_running,
    worker,
)
from helpers import wait_until

S = SectorState
# -- chaos and durability (real worker processes) ----------------------------------------


class Supervisors:
    """Supervisors ticking in threads; the leader can be killed (stops without resigning)."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.count = 0

    def add(self) -> None:
        self.count += 1
        boss = Supervisor(runtime(self.pool), f"sup-{self.count}")
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(0.2):
                boss.tick()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads[boss.name] = (thread, stop)

    def kill(self, name: str) -> None:
        thread, stop = self.threads.pop(name)
        stop.set()
        thread.join()

    def stop(self) -> None:
        for name in list(self.threads):
            self.kill(name)


@pytest.mark.slow
def test_chaos_kill_workers_and_the_leader(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = {
        "AddPiece": 300,
        "PreCommit1": 2000,
        "PreCommit2": 500,
        "Commit2": 500,
        "Finalize": 200,
    }
    env = farm_env_vars(times)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.cache_clear()
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 8) + store.create_many("f01000", "deal", 2)
    chaos = random.Random(7)
    supervisors = Supervisors(prefix)
    with LocalFarm(prefix, ["hostA", "hostB"], farm_env / "farm", env=env) as farm:
        farm.wait_ready()
        supervisors.add()
        supervisors.add()
        for sector in sectors:
            start(store, sector.id, actor="test")
        for round_ in range(6):
            time.sleep(2.0)
            victim = chaos.choice(sorted(farm.processes))
            farm.kill(victim)  # kill -9
            phase_name, host = victim.split("@")
            phase = next(
                p for p, q in __import__("sealpool").routing.QUEUE_NAMES.items() if q == phase_name
            )
            time.sleep(0.5)
            farm.revive(phase, host)
            if round_ % 2 == 0:
                leader = runtime(prefix).store.client.get(f"{prefix}:supervisor:leader")
                name = leader.split(" ", 1)[1] if leader else None
                if name in supervisors.threads:
                    supervisors.kill(name)  # the leader dies without resigning
                    supervisors.add()
        try:
            done = wait_for(store, [s.id for s in sectors], timeout_s=300)
        finally:
            supervisors.stop()
    assert [s.state for s in done] == [S.PROVING] * len(sectors)
    assert_never_twice_at_once(store, [s.id for s in sectors])
    assert len(store.list()) == len(sectors)  # none lost, none made twice


class PrivateRedis:
    """A Redis server of the test's own, with AOF, that can be killed and started again on
    its port: the embedded binary, or the system's plain ``redis-server``."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        root.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.info: server.ServerInfo | None = None
        if kind == "embedded":
            self.info = server.start(root)
            self.port = self.info.port
        else:
            binary = shutil.which("redis-server")
            if binary is None:
                pytest.skip("no redis-server on this machine")
            self.binary, self.port = binary, server.free_port()
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.kind == "embedded":
            self.info = server.start(self.root)
            assert self.info.port == self.port  # the same port: every worker's URL holds
            return
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                str(self.root), "--appendonly", "yes", "--save", ""]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_until(lambda: answers(client), what="redis-server up")

    def kill(self) -> None:
        """kill -9: no shutdown, no last AOF flush."""
        if self.kind == "embedded":
            info = server.status(self.root)
            assert info is not None
            os.kill(info.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(info.pid).wait(30)
        else:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.kind == "embedded":
            server.stop(self.root)
        elif self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["embedded", "redis-server"])
def test_a_redis_outage_mid_phase_loses_nothing_and_needs_no_hand(
    farm_env: Path, prefix: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis (AOF on) is killed -9 mid-PC1 and comes back 20 s later on its port: the
    workers, a `sealpool supervisor` process and every sector carry on by themselves."""
    backing = PrivateRedis(kind, farm_env / "redis")
    times = {"AddPiece": 100, "PreCommit1": 8000}
    env = {**farm_env_vars(times), "SEALPOOL_LEASE_S": "30", "SEALPOOL_REDIS_URL": backing.url,
           "SEALPOOL_TICK_S": "0.5"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.cache_clear()  # (the test process sends no task: the supervisor process does)
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 3)
    ids = [s.id for s in sectors]
    try:
        with (
            supervisor_process(env, farm_env / "supervisor.log") as supervisor,
            LocalFarm(prefix, ["hostA"], farm_env / "farm", env=env),
        ):
            # the supervisor starts the Pending sectors; the outage hits a running PC1
            wait_running(store, ids, S.PRE_COMMIT_1)
            before = {s.id: s.version for s in store.list()}
            backing.kill()
            time.sleep(20)  # the outage itself: 20 s without store or broker
            backing.start()
            after = {s.id: s.version for s in store.list()}
            assert all(after[i] >= version for i, version in before.items())  # nothing lost
            done = wait_for(store, ids, timeout_s=180)
            assert supervisor.poll() is None, "the supervisor exited during the outage"
        assert [s.state for s in done] == [S.PROVING] * 3
        assert_never_twice_at_once(store, ids)
    finally:
        backing.stop()
    assert "Redis unavailable" in (farm_env / "supervisor.log").read_text()


# -- security -------------------------------------------------------------------------


def test_pickle_is_never_accepted(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sector = store.move(store.create("f01000", "cc").id, S.ADD_PIECE, actor="test")
    kwargs = {"pool": prefix, "sector_id": sector.id, "kind": "cc", "host": None, "urgent": False}
    with worker(prefix, phases=[S.ADD_PIECE], concurrency=1):
        message = sector.msg_id
        app.send_task("sealpool.ap", kwargs=kwargs, serializer="pickle", task_id=message)
        queues = lambda: store.client.scan_iter(f"{prefix}.ap*")  # noqa: E731
        wait_until(
            lambda: sum(store.client.llen(q) for q in queues()) == 0,
            timeout_s=60,
            what="the worker took the pickled message off its queue",
        )
        time.sleep(1.0)  # had it been accepted, it would be running by now
        assert events(store, sector.id, "claim") == []  # the pickled message never ran
        app.send_task("sealpool.ap", kwargs=kwargs, task_id=message)  # the same as JSON does
        wait_for(store, [sector.id], done=[S.PRE_COMMIT_1], timeout_s=20)
    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"


def test_redis_password_is_honoured(tmp_path: Path) -> None:
    info = server.start(tmp_path / "redis")
    with_password = f"redis://:s3cret@127.0.0.1:{info.port}/0"
    redis.Redis.from_url(info.url).config_set("requirepass", "s3cret")
    try:
        assert connect(load_settings(redis_url=with_password)).ping()
        with pytest.raises(ServerError, match=r"cannot reach Redis at redis://:\*\*\*@127"):
            connect(load_settings(redis_url=f"redis://:wrong@127.0.0.1:{info.port}/0"))
        with pytest.raises(ServerError, match=r"(?i)auth"):
            connect(load_settings(redis_url=info.url))
    finally:
        redis.Redis.from_url(with_password).config_set("requirepass", "")
        server.stop(tmp_path / "redis")


def test_a_redis_url_of_another_scheme_is_refused() -> None:
    """(TLS itself is exercised against a real TLS server in test_tls.py.)"""
    with pytest.raises(ConfigError, match=r"redis.url: .*must start with redis://.*'http://x'"):
        load_settings(redis_url="http://x")


# -- bad input, generated -------------------------------------------------------------

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.text(max_size=40))
def test_any_sector_id_is_parsed_or_refused_clearly(text: str) -> None:
    try:
        miner, number = parse_sector_id(text)
    except InvalidSectorId as exc:
        assert str(exc).startswith("invalid sector id ") and "\n" not in str(exc).strip()
    else:
        assert text == f"{miner}-{number}"


toml_values = st.recursive(
    st.one_of(st.integers(-5, 5000), st.text(max_size=12), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["slots", "cores", "gpus", "path", "env", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "host",
                "backend",
                "storage",
                "phases",
                "sector_size",
                "gpu_groups",
                "processor",
                "pc1",
            ]
        ),
        toml_values,
        max_size=6,
    )
)
def test_any_profile_is_loaded_or_refused_clearly(tmp_path_factory, data: dict) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "p.toml"
    path.write_text("\n".join(f"{key} = {_toml(value)}" for key, value in data.items()))
    try:
        load_profile(path)
    except ConfigError as exc:
        assert all(line.startswith(f"{path}: ") for line in str(exc).splitlines())


@FUZZ
@given(st.binary(max_size=200))
def test_any_processor_output_is_a_result_or_a_clear_error(tmp_path_factory, output: bytes) -> None:
    tmp = tmp_path_factory.mktemp("proc")
    (tmp / "out").write_bytes(output)
    argv = [
        sys.executable,
        "-c",
        f"import sys; sys.stdout.buffer.write(open({str(tmp / 'out')!r}, 'rb').read())",
    ]
    request = PhaseRequest(
        "f01000-1", "f01000", 1, "AddPiece", 2048, str(tmp), None, None, None, [], {}
    )
    try:
        result = ExternalBackend(argv).run(request, Slot("h", (tmp,), (tmp,)), threading.Event())
    except PhaseError as exc:
        assert str(exc).startswith("AddPiece of f01000-1: ")
    else:
        assert isinstance(result, dict)
