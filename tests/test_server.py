"""The embedded server: start, reuse, stop, and durability of the pool across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import redis
from click.testing import CliRunner

from sealpool import server
from sealpool.cli import cli
from sealpool.store import SectorStore


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
