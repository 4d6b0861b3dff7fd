"""``sealpool worker --profile`` as a real process: its Celery processes die with it, a dead
phase process is started again alone, and a second launcher for the same host is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from sealpool.farm import sim_profile
from sealpool.store import SectorState
from sealpool.worker_profiles.slots import slot_holder, slot_reports

from helpers import wait_until

S = SectorState
PHASES = {"ap@hostA": "AddPiece", "pc1@hostA": "PreCommit1"}


@pytest.fixture
def profile(cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sim profile of host ``hostA`` with one AddPiece and one PreCommit1 slot."""
    monkeypatch.setenv("SEALPOOL_HEARTBEAT_S", "0.5")
    temp, sealed = tmp_path / "temp", tmp_path / "sealed"
    temp.mkdir()
    sealed.mkdir()
    path = tmp_path / "profile.toml"
    path.write_text(sim_profile("hostA", [temp], [sealed], {S.ADD_PIECE: 1, S.PRE_COMMIT_1: 1}))
    return path


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Launchers:
    """The ``sealpool worker --profile`` processes of a test and the phase processes seen."""

    def __init__(self, profile: Path, log: Path) -> None:
        self.argv = [sys.executable, "-m", "sealpool", "worker", "--profile", str(profile)]
        self.log = log
        self.launchers: list[subprocess.Popen[bytes]] = []
        self.seen: set[int] = set()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.launchers.append(subprocess.Popen(self.argv, stdout=log, stderr=log))
        return self.launchers[-1]

    def phase_pids(self, launcher: subprocess.Popen[bytes]) -> dict[str, int]:
        """The launcher's live phase processes: node name → pid."""
        pids = {}
        for child in psutil.Process(launcher.pid).children():
            try:
                argv = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "--hostname" in argv and running(child.pid):
                pids[argv[argv.index("--hostname") + 1]] = child.pid
        self.seen.update(pids.values())
        return pids

    def consuming(
        self, client: redis.Redis, pool: str, launcher: subprocess.Popen[bytes]
    ) -> dict[str, int]:
        """Wait until both phase processes own their slots and are ready (each start of
        them logged ready); their pids."""
        me = socket.gethostname()
        pids: dict[str, int] = {}

        def ready() -> bool:
            nonlocal pids
            assert launcher.poll() is None, self.log.read_text()
            pids = self.phase_pids(launcher)
            log = self.log.read_text(errors="replace")
            return set(pids) == set(PHASES) and all(
                slot_holder(client, pool, "hostA", PHASES[name]) == f"{pid}@{me}"
                # past start-up (its signal handlers set), restarts included
                and log.count(f"{name} ready.") > log.count(f"worker {name} started again")
                for name, pid in pids.items()
            )

        wait_until(ready, timeout_s=90, what="both phase processes consuming")
        return pids

    def kill_all(self) -> None:
        for launcher in self.launchers:
            if launcher.poll() is None:
                self.phase_pids(launcher)
                launcher.kill()
                launcher.wait()
        for pid in self.seen:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launchers(profile: Path, tmp_path: Path) -> Iterator[Launchers]:
    """Launchers of the profile, output in ``launcher.log``; all killed afterwards."""
    started = Launchers(profile, tmp_path / "launcher.log")
    yield started
    started.kill_all()


def test_phase_processes_die_with_a_killed_launcher(
    launchers: Launchers, client: redis.Redis, prefix: str
) -> None:
    launcher = launchers.start()
    pids = launchers.consuming(client, prefix, launcher)
    launcher.kill()  # kill -9: no chance to stop its children
    launcher.wait()
    wait_until(
        lambda: not any(running(pid) for pid in pids.values()), what="every phase process gone"
    )
    wait_until(lambda: slot_reports(client, prefix) == [], what="slots unregistered")


def test_a_dead_phase_process_is_started_again_and_a_second_launcher_refused(
    launchers: Launchers, client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    launcher = launchers.start()
    pids = launchers.consuming(client, prefix, launcher)
    second = subprocess.run(launchers.argv, capture_output=True, text=True, timeout=60)
    holder = f"{pids['ap@hostA']}@{socket.gethostname()}"
    assert second.returncode != 0
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"Error: AddPiece slots of hostA are held by process {holder}")
    assert launchers.phase_pids(launcher) == pids  # nothing else started or stopped

    os.kill(pids["pc1@hostA"], signal.SIGKILL)  # delivered asynchronously: wait for its end
    wait_until(lambda: not running(pids["pc1@hostA"]), what="the killed pc1 process gone")
    again = launchers.consuming(client, prefix, launcher)
    assert again["pc1@hostA"] != pids["pc1@hostA"]
    assert again["ap@hostA"] == pids["ap@hostA"]  # the other phase ran on
    log = (tmp_path / "launcher.log").read_text()
    assert "worker pc1@hostA exited with -9" in log
    assert f"worker pc1@hostA started again (pid {again['pc1@hostA']})" in log

    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 0
    assert not any(running(pid) for pid in again.values())
    assert slot_reports(client, prefix) == []
