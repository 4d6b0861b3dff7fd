"""A farm of simulated hosts on this machine, each running ``sealpool worker`` processes.

Used by ``sealpool demo`` and the end-to-end tests: every host gets a generated sim-backend
profile (its own temp and sealed directories, the slots below) and the same Celery worker
processes that ``sealpool worker --profile`` starts, so the demo exercises the real thing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealpool.errors import SealpoolError
from sealpool.routing import QUEUE_NAMES
from sealpool.store import SectorState
from sealpool.worker_profiles.launcher import start_workers, stop_workers

S = SectorState
DEMO_SLOTS: dict[SectorState, int] = {
    S.ADD_PIECE: 2, S.PRE_COMMIT_1: 4, S.PRE_COMMIT_2: 1, S.PRE_COMMITTING: 2, S.WAIT_SEED: 2,
    S.COMMIT_1: 2, S.COMMIT_2: 1, S.COMMITTING: 2, S.FINALIZE: 2,
}  # fmt: skip


def sim_profile(
    host: str, temp: Sequence[Path], sealed: Sequence[Path], slots: Mapping[SectorState, int]
) -> str:
    """The TOML of a sim-backend profile with these storage paths and ``slots`` per phase."""

    def paths(dirs: Sequence[Path]) -> str:
        return ", ".join(f'{{ path = "{each}" }}' for each in dirs)

    lines = [f'host = "{host}"', 'backend = "sim"', "", "[storage]"]
    lines += [f"temp = [{paths(temp)}]", f"sealed = [{paths(sealed)}]"]
    for phase, count in slots.items():
        lines += ["", f"[phases.{phase.value}]", f"slots = {count}"]
    return "\n".join(lines) + "\n"


@dataclass
class LocalFarm:
    """Start and stop the worker processes of simulated ``hosts`` for one pool."""

    pool: str
    hosts: Sequence[str]
    root: Path
    slots: Mapping[SectorState, int] = field(default_factory=lambda: dict(DEMO_SLOTS))
    env: Mapping[str, str] = field(default_factory=dict)
    paths_per_host: int = 1
    host_slots: Mapping[str, Mapping[SectorState, int]] = field(default_factory=dict)
    app_module: str = "sealpool.app"
    shared_temp: bool = False  # one temp root for every host, as over NFS (temp phases may move)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def host_dirs(self, host: str) -> tuple[list[Path], list[Path]]:
        """The temp and sealed paths of ``host``'s profile."""

        def paths(owner: str, role: str) -> list[Path]:
            return [self.root / owner / role / str(i) for i in range(self.paths_per_host)]

        return paths("shared" if self.shared_temp else host, "temp"), paths(host, "sealed")

    def profile_path(self, host: str) -> Path:
        return self.root / host / "profile.toml"

    def start(self) -> None:
        """Write each host's profile and launch its workers (see :meth:`wait_ready`)."""
        for host in self.hosts:
            temp, sealed = self.host_dirs(host)
            for path in (*temp, *sealed):
                path.mkdir(parents=True, exist_ok=True)
            self.profile_path(host).write_text(self.profile_text(host, temp, sealed))
            self._launch(host)

    def profile_text(self, host: str, temp: list[Path], sealed: list[Path]) -> str:
        """The TOML profile of ``host`` (a subclass may add GPUs, groups, …)."""
        return sim_profile(host, temp, sealed, self.host_slots.get(host, self.slots))

    def _launch(self, host: str, phases: set[SectorState] | None = None) -> None:
        self.processes.update(
            start_workers(
                self.profile_path(host),
                self.pool,
                dict(self.env),
                self.root / "logs",
                self.app_module,
                phases,
            )
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
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
            with app.connection_for_write() as connection:  # fresh: survives broker restarts
                replies = app.control.ping(
                    destination=sorted(waiting), timeout=0.5, connection=connection
                )
            waiting -= {node for reply in replies for node in reply}
        if waiting:
            raise SealpoolError(f"workers did not answer within {timeout_s}s: {sorted(waiting)}")

    def node(self, phase: SectorState, host: str) -> str:
        """The node name of ``phase``'s worker process on ``host``."""
        return f"{QUEUE_NAMES[phase]}@{host}"

    def kill(self, name: str) -> None:
        """kill -9 one worker process (a crashed worker)."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def revive(self, phase: SectorState, host: str) -> None:
        """Start ``phase``'s worker process on ``host`` again (after :meth:`kill`)."""
        self._launch(host, {phase})

    def kill_host(self, host: str) -> None:
        """kill -9 every worker process of ``host`` (the machine died)."""
        for name in [name for name in self.processes if name.endswith(f"@{host}")]:
            self.kill(name)

    def stop(self) -> None:
        """Warm shutdown of every worker (running phases handed back), SIGKILL if stuck."""
        stop_workers(self.processes, grace_s=20.0)
        self.processes.clear()

    def __enter__(self) -> LocalFarm:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
