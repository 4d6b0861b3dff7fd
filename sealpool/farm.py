"""A farm of real ``celery worker`` processes on this machine, one group per host and role.

Used by ``sealpool demo`` and the end-to-end tests: every simulated host gets its own
worker processes (node names ``<group>@<host>``), its own host queues, temp and sealed
directories. Each worker runs in a session of its own so that stopping the farm stops
every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from sealpool.errors import SealpoolError
from sealpool.routing import host_queues
from sealpool.store import SectorState

S = SectorState
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class WorkerGroup:
    """Worker processes of one role on a host: which phases, how many at once."""

    name: str
    phases: tuple[SectorState, ...]
    slots: int


DEMO_GROUPS: tuple[WorkerGroup, ...] = (
    WorkerGroup("cpu", (S.ADD_PIECE, S.PRE_COMMIT_1), 4),
    WorkerGroup("gpu", (S.PRE_COMMIT_2, S.COMMIT_2), 1),
    WorkerGroup("chain", (S.PRE_COMMITTING, S.WAIT_SEED, S.COMMIT_1, S.COMMITTING, S.FINALIZE), 4),
)


@dataclass
class LocalFarm:
    """Start and stop the worker processes of every host and group of one pool."""

    pool: str
    hosts: Sequence[str]
    root: Path
    groups: Sequence[WorkerGroup] = DEMO_GROUPS
    env: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def host_dirs(self, host: str) -> tuple[Path, Path]:
        """The temp and sealed directories of ``host``."""
        return self.root / host / "temp", self.root / host / "sealed"

    def start(self) -> None:
        """Launch every worker process (returns at once; see :meth:`wait_ready`)."""
        for host in self.hosts:
            temp, sealed = self.host_dirs(host)
            env = {**os.environ, **self.env, "SEALPOOL_HOST": host,
                   "SEALPOOL_KEY_PREFIX": self.pool,
                   "SEALPOOL_TEMP_DIRS": json.dumps([str(temp)]),
                   "SEALPOOL_SEALED_DIRS": json.dumps([str(sealed)])}  # fmt: skip
            for group in self.groups:
                self._launch(host, group, env)

    def _launch(self, host: str, group: WorkerGroup, env: dict[str, str]) -> None:
        name = f"{group.name}@{host}"
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "celery", "-A", "sealpool.app", "worker",
            "--pool", "threads", "--concurrency", str(group.slots),
            "--queues", ",".join(host_queues(self.pool, list(group.phases), host)),
            "--hostname", name, "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING", "--logfile", str(log),
        ]  # fmt: skip
        self.processes[name] = subprocess.Popen(
            argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every worker answers a ping (SealpoolError if one died or is mute)."""
        from sealpool.app import app

        deadline = time.monotonic() + timeout_s
        waiting = set(self.processes)
        while waiting and time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SealpoolError(
                        f"worker {name} exited with {process.returncode}; "
                        f"see {self.root / 'logs' / name}.log"
                    )
            replies = app.control.ping(destination=sorted(waiting), timeout=0.5)
            waiting -= {node for reply in replies for node in reply}
        if waiting:
            raise SealpoolError(f"workers did not answer within {timeout_s}s: {sorted(waiting)}")

    def kill(self, name: str) -> None:
        """kill -9 one worker's whole process group (a crashed host or worker)."""
        self._signal(self.processes.pop(name), signal.SIGKILL)

    def stop(self) -> None:
        """Warm shutdown of every worker, then SIGKILL for any still running."""
        for process in self.processes.values():
            self._signal(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        if signum == signal.SIGKILL:
            process.wait()

    def __enter__(self) -> LocalFarm:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
