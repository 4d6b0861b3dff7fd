"""End to end: real ``celery worker`` processes on two simulated hosts, and ``sealpool demo``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from sealpool.farm import LocalFarm
from sealpool.metrics import phase_runs
from sealpool.routing import TEMP_PHASES
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import SectorState

from farm_helpers import wait_for


def test_two_hosts_seal_everything_and_temp_data_never_moves(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 6) + store.create_many("f01000", "deal", 2)
    env = {"SEALPOOL_TIME_SCALE": "3000", "SEALPOOL_TICKET_CONFIDENCE": "10"}
    with LocalFarm(prefix, ["host1", "host2"], farm_env / "farm", env=env) as farm:
        farm.wait_ready()
        for sector in sectors:
            start(store, sector.id, actor="test")
        done = wait_for(store, [s.id for s in sectors], timeout_s=120)
        pids = [p.pid for p in farm.processes.values()]
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )
    assert [s.state for s in done] == [SectorState.PROVING] * len(sectors)
    temp = {phase.value for phase in TEMP_PHASES}
    used_hosts = set()
    for sector in done:
        runs = phase_runs(sector.id, store.history(sector.id))
        hosts = {run.host for run in runs if run.phase in temp}
        assert hosts == {sector.host}, (sector.id, hosts)
        used_hosts |= hosts
        (temp_root,), (sealed_root,) = farm.host_dirs(sector.host)
        assert Path(sector.sealed_path).parents[1] == sealed_root.resolve()  # lotus' sealed/
        assert Path(sector.temp_path).parent == temp_root.resolve()
        assert sum(o.get("cross_host_bytes", 0) for o in sector.outputs.values()) == 0
    assert used_hosts == {"host1", "host2"}
    for host in ("host1", "host2"):
        assert list(farm.host_dirs(host)[0][0].iterdir()) == []  # scratch all freed


def test_demo_command_prints_its_figures(tmp_path: Path) -> None:
    """``sealpool demo`` as a user runs it: a fresh process and its own embedded Redis."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEALPOOL_")}
    env["SEALPOOL_DATA_DIR"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path / "kept")  # what the demo keeps to inspect goes here
    (tmp_path / "kept").mkdir()
    argv = [
        sys.executable,
        "-c",
        "from sealpool.cli import main; main()",
        "demo",
        "--sectors",
        "4",
        "--hosts",
        "2",
        "--time-scale",
        "4000",
        "--json",
    ]
    before = {p.pid for p in psutil.process_iter()}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["sectors_sealed"] == 4 and figures["sectors_failed"] == 0
    assert figures["cross_host_bytes"] == 0 and figures["temp_phase_hosts_consistent"]
    assert figures["elapsed_s"] > 0
    # each figure is what it says: sealed per hour of the run, and its share of the bound
    # (never above it; how far below depends on the machine's load, so no lower limit)
    throughput = figures["sectors_sealed"] / figures["elapsed_s"] * 3600
    assert figures["throughput_per_h"] == pytest.approx(throughput, rel=1e-6)
    assert figures["bound_per_h"] > 0
    ratio = figures["throughput_per_h"] / figures["bound_per_h"]
    assert figures["bound_ratio"] == pytest.approx(ratio, rel=1e-6)
    assert 0 < figures["bound_ratio"] <= 1.05
    # the demo keeps its pool to inspect under its own root, nothing in the data directory
    assert [path.name for path in tmp_path.iterdir()] == ["kept"]
    assert Path(figures["root"]).parent == tmp_path / "kept"
    left = [p for p in psutil.process_iter() if p.pid not in before and _started_by(p, tmp_path)]
    assert left == []  # no worker or server of the demo's outlives it


def _started_by(process: psutil.Process, data_dir: Path) -> bool:
    """Whether ``process`` belongs to the demo run with ``data_dir`` (other tests may run
    workers of their own meanwhile)."""
    try:
        return process.environ().get("SEALPOOL_DATA_DIR") == str(data_dir)
    except psutil.Error:  # gone, or not ours to read
        return False
