"""The embedded server: start, reuse, stop, durability of the pool and of its address across
restarts, a password; and the long-running commands that must never start one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
from click.testing import CliRunner

from sealpool import server
from sealpool.cli import cli
from sealpool.errors import ServerError
from sealpool.farm import sim_profile
from sealpool.store import SectorState, SectorStore
from sealpool.worker_profiles.slots import slot_reports

from helpers import wait_until

PASSWORD = "pw-s3cret"


def test_start_reuse_stop_and_data_survives(tmp_path: Path) -> None:
    data_dir = tmp_path / "pool"
    first = server.start(data_dir)
    try:
        assert server.start(data_dir) == first  # reused while it runs
        assert server.status(data_dir) == first
        store = SectorStore(redis.Redis.from_url(first.url, decode_responses=True))
        ids = [s.id for s in store.create_many("f01000", "deal", 5)]
        assert store.client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        assert server.stop(data_dir)
    assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"
    assert server.status(data_dir) is None
    assert not server.stop(data_dir)
    again = server.start(data_dir)
    try:
        store = SectorStore(redis.Redis.from_url(again.url, decode_responses=True))
        assert [s.id for s in store.list()] == ids
    finally:
        server.stop(data_dir)


def test_server_commands(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SEALPOOL_REDIS_URL", raising=False)
    monkeypatch.setenv("SEALPOOL_DATA_DIR", str(tmp_path / "d"))
    runner = CliRunner()
    try:
        started = json.loads(runner.invoke(cli, ["server", "start", "--json"]).output)
        assert started["running"] and started["url"].startswith("redis://127.0.0.1:")
        added = runner.invoke(cli, ["sectors", "add", "--kind", "cc", "--json"])
        assert added.exit_code == 0, added.output
        status = json.loads(runner.invoke(cli, ["server", "status", "--json"]).output)
        assert status["pid"] == started["pid"]
    finally:
        stopped = json.loads(runner.invoke(cli, ["server", "stop", "--json"]).output)
    assert stopped == {"stopped": True}
    status = json.loads(runner.invoke(cli, ["server", "status", "--json"]).output)
    assert status["running"] is False


def clean_env(**settings: str) -> dict[str, str]:
    """Our environment without any SEALPOOL_ setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOOL_")}
    return {**env, **settings}


def sealpool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``sealpool ARGS`` in a process of its own (another machine, as far as it can tell)."""
    return subprocess.run(
        [sys.executable, "-m", "sealpool", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


def test_a_second_machine_reaches_a_server_bound_to_another_address(tmp_path: Path) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a local address here")
    data_dir = tmp_path / "pool"
    env = {"SEALPOOL_DATA_DIR": str(data_dir), "SEALPOOL_SERVER_PASSWORD": PASSWORD}
    runner = CliRunner()
    started = runner.invoke(cli, ["server", "start", "--bind", "127.0.0.2", "--json"], env=env)
    try:
        assert started.exit_code == 0, started.output
        port = server.saved_settings(data_dir).port
        assert json.loads(started.output)["url"] == f"redis://:***@127.0.0.2:{port}/0"
        shown = runner.invoke(cli, ["server", "status", "--json", "--show-password"], env=env)
        url, pid = json.loads(shown.output)["url"], json.loads(shown.output)["pid"]
        assert url == f"redis://:{PASSWORD}@127.0.0.2:{port}/0"
        assert not any(PASSWORD in arg for arg in psutil.Process(pid).cmdline())

        other = clean_env(SEALPOOL_DATA_DIR=str(tmp_path / "other-machine"))
        machine_b = other | {"SEALPOOL_REDIS_URL": url}
        added = sealpool("sectors", "add", "--kind", "cc", "--json", env=machine_b)
        assert added.returncode == 0, added.stderr
        store = SectorStore(redis.Redis.from_url(url, decode_responses=True))
        assert [s.id for s in store.list()] == [json.loads(added.stdout)[0]["id"]]
        assert not (tmp_path / "other-machine").exists()  # it started no server of its own

        for auth, reason in (("", "Authentication required"), (":x@", "invalid username-password")):
            given = f"redis://{auth}127.0.0.2:{port}/0"
            refused = sealpool("pool", "stats", env=other | {"SEALPOOL_REDIS_URL": given})
            line = one_error_line(refused.stderr)
            assert refused.returncode != 0 and "cannot reach Redis at redis://" in line
            assert f"127.0.0.2:{port}/0: {reason}" in line
            assert PASSWORD not in line and ":x@" not in line
    finally:
        server.stop(data_dir)


def test_a_restart_keeps_address_port_and_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "pool"
    first = server.start(data_dir, password=PASSWORD)
    try:
        with pytest.raises(ServerError, match=r"already runs on 127\.0\.0\.1"):
            server.start(data_dir, port=server.free_port())
    finally:
        server.stop(data_dir)
    env = {"SEALPOOL_DATA_DIR": str(data_dir)}
    status = CliRunner().invoke(cli, ["server", "status", "--json"], env=env)
    assert status.exit_code == 1 and json.loads(status.output)["running"] is False
    again = server.start(data_dir)
    try:
        assert (again.bind, again.port, again.password) == ("127.0.0.1", first.port, PASSWORD)
        assert redis.Redis.from_url(first.url).ping()  # the URL workers were given still works
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(first.url.replace(PASSWORD, "wrong")).ping()
    finally:
        server.stop(data_dir)
    assert (data_dir / server.STATE_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "command",
    [
        ["supervisor", "--ticks", "1"],
        ["exporter", "--address", "256.0.0.1"],  # never reached: no Redis comes first
        ["worker", "--profile", "missing.toml"],
        ["web", "--port", "1"],  # never listens: no Redis comes first
    ],
)
def test_long_running_commands_never_start_a_server(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "pool"
    env = {"SEALPOOL_REDIS_URL": None, "SEALPOOL_CONFIG": None, "SEALPOOL_DATA_DIR": str(data_dir)}
    refused = CliRunner().invoke(cli, command, env=env)
    assert refused.exit_code == 1
    assert one_error_line(refused.output) == (
        "Error: no Redis: set SEALPOOL_REDIS_URL or run `sealpool server start` first "
        f"(no embedded server runs in {data_dir})"
    )
    assert not data_dir.exists()


def test_supervisor_uses_the_embedded_server_a_one_shot_command_started(tmp_path: Path) -> None:
    env = clean_env(SEALPOOL_DATA_DIR=str(tmp_path / "pool"))
    try:
        assert sealpool("sectors", "add", "--kind", "cc", env=env).returncode == 0
        running = server.status(tmp_path / "pool")
        assert running is not None
        ticked = sealpool("supervisor", "--ticks", "1", "--json", env=env)
        assert ticked.returncode == 0, ticked.stderr
        assert json.loads(ticked.stdout)["leader"] is True
        assert server.status(tmp_path / "pool") == running
    finally:
        server.stop(tmp_path / "pool")


def test_worker_hands_the_pool_url_to_its_processes(
    redis_url: str, prefix: str, client: redis.Redis, tmp_path: Path
) -> None:
    temp, sealed = tmp_path / "temp", tmp_path / "sealed"
    for path in (temp, sealed):
        path.mkdir()
    profile = tmp_path / "box.toml"
    profile.write_text(sim_profile("box", [temp], [sealed], {SectorState.PRE_COMMIT_1: 1}))
    env = clean_env(SEALPOOL_KEY_PREFIX=prefix, SEALPOOL_DATA_DIR=str(tmp_path / "data"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "sealpool", "--redis-url", redis_url, "worker", "--profile",
         str(profile)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: slot_reports(client, prefix), 90, "the worker's slot registered")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert not (tmp_path / "data").exists()  # no process of it started a server
