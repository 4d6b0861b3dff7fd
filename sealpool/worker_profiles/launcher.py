"""``sealpool worker --profile FILE``: the Celery worker processes that realise a profile.

One ``celery worker`` process per phase of the profile, with exactly that phase's number of
slots as its concurrency (a threads pool), consuming the phase's shared queue and, for the
phases that touch temp files, this host's queue. Prefetch is off (see sealpool.app), so a
process never holds more messages than it has free slots. SIGTERM or SIGINT is passed on
to every process: they take no new work and hand their running phases back.

A phase process that dies is started again on its own, after a back-off that doubles from
1 s to 60 s (and starts over once a process has run for a minute); the others run on. The
processes die with the launcher, even a ``kill -9``'d one: on Linux each is started with
``PR_SET_PDEATHSIG`` = SIGTERM (``prctl(2)``), which the kernel sends when the thread that
started it exits, so start them from a thread that lives as long as they should (the main
thread). The launcher refuses to start while another live process owns a phase's slots on
this host (an orphan of an earlier launcher, a second launcher).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import redis

from sealpool.config import load_settings
from sealpool.errors import ConfigError
from sealpool.routing import QUEUE_NAMES, host_queues
from sealpool.store import SectorState
from sealpool.worker_profiles.effective import apply_profile
from sealpool.worker_profiles.model import Profile, load_profile
from sealpool.worker_profiles.plan import Plan, plan_profile
from sealpool.worker_profiles.slots import check_free

log = logging.getLogger(__name__)
STOP_GRACE_S = 60.0
BACKOFF_FIRST_S, BACKOFF_MAX_S, STABLE_S = 1.0, 60.0, 60.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def node_name(phase: SectorState, host: str) -> str:
    """The Celery node name of a phase's process on a host: ``pc1@host``."""
    return f"{QUEUE_NAMES[phase]}@{host}"


def worker_argv(
    pool: str,
    profile: Profile,
    plan: Plan,
    phase: SectorState,
    loglevel: str = "INFO",
    logfile: Path | None = None,
    app_module: str = "sealpool.app",
) -> list[str]:
    """The ``celery worker`` command line of one phase of a profile."""
    argv = [
        sys.executable, "-m", "celery", "-A", app_module, "worker",
        "--concurrency", str(len(plan.slots_for(phase.value))),
        "--queues", ",".join(host_queues(pool, [phase], profile.host)),
        "--hostname", node_name(phase, profile.host),
        "--without-gossip", "--without-mingle", "--loglevel", loglevel,
    ]  # fmt: skip
    return argv + (["--logfile", str(logfile)] if logfile else [])


def checked_profile(path: Path) -> tuple[Profile, Plan]:
    """The profile over the settings its processes will load (environment and
    ``SEALPOOL_CONFIG``) and its plan on this machine; ConfigError listing every problem."""
    _settings, profile = apply_profile(load_settings(), load_profile(path), path)
    plan = plan_profile(profile, path)
    if plan.errors:
        raise ConfigError("\n".join(plan.errors))
    return profile, plan


def _dying_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when this thread exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the launcher died before the line above took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class PhaseCommand:
    """How to start the process of one phase of a profile."""

    phase: SectorState
    host: str
    argv: list[str]
    env: dict[str, str]
    logfile: Path | None

    @property
    def name(self) -> str:
        return node_name(self.phase, self.host)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process, writing to the log file (else to our own stdout and stderr)."""
        output = self.logfile.open("ab") if self.logfile else None
        try:
            return subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=output, preexec_fn=_dying_with_parent(),
            )  # fmt: skip
        finally:
            if output:
                output.close()  # the child holds its own descriptor


def phase_commands(
    path: Path,
    pool: str,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    app_module: str = "sealpool.app",
    phases: Collection[SectorState] | None = None,
) -> list[PhaseCommand]:
    """The commands of the profile at ``path``'s phases (or of ``phases`` among them)."""
    profile, plan = checked_profile(path)
    base = {
        **os.environ,
        **(env or {}),
        "SEALPOOL_PROFILE": str(path.resolve()),
        "SEALPOOL_HOST": profile.host,
        "SEALPOOL_KEY_PREFIX": pool,
    }
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    commands = []
    for phase in QUEUE_NAMES:
        if profile.phase_slots(phase) is None or (phases is not None and phase not in phases):
            continue
        logfile = log_dir / f"{node_name(phase, profile.host)}.log" if log_dir else None
        argv = worker_argv(pool, profile, plan, phase, logfile=logfile, app_module=app_module)
        phase_env = {**base, "SEALPOOL_WORKER_PHASE": phase.value}
        commands.append(PhaseCommand(phase, profile.host, argv, phase_env, logfile))
    return commands


def start_workers(
    path: Path,
    pool: str,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    app_module: str = "sealpool.app",
    phases: Collection[SectorState] | None = None,
) -> dict[str, subprocess.Popen[bytes]]:
    """Start the phase processes of the profile at ``path``; their node names → processes.

    ``phases`` limits them to some phases (restarting one that died); ``app_module`` is the
    Celery app they run (benchmarks swap in a naive set-up).
    """
    commands = phase_commands(path, pool, env, log_dir, app_module, phases)
    return {command.name: command.spawn() for command in commands}


def stop_workers(
    processes: dict[str, subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S
) -> None:
    """SIGTERM every process (warm shutdown), then SIGKILL what outlives ``grace_s``."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PhaseProcess:
    """One phase's process, started again after a back-off whenever it dies."""

    command: PhaseCommand
    process: subprocess.Popen[bytes]
    started: float
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float | None = None

    @classmethod
    def start(cls, command: PhaseCommand) -> PhaseProcess:
        return cls(command, command.spawn(), time.monotonic())

    def check(self, now: float) -> None:
        """Start the process again if that is due, or schedule it if the process died."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self._restart(now)
            return
        code = self.process.poll()
        if code is None:
            return
        ran_s = now - self.started
        if ran_s >= STABLE_S:
            self.backoff_s = BACKOFF_FIRST_S
        log.error(
            "worker %s exited with %s after %.0fs; starting it again in %.0fs",
            self.command.name, code, ran_s, self.backoff_s,
        )  # fmt: skip
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(BACKOFF_MAX_S, 2 * self.backoff_s)

    def _restart(self, now: float) -> None:
        try:
            self.process = self.command.spawn()
        except OSError as exc:
            log.error("worker %s not started: %s", self.command.name, exc)
            self._schedule(now)
            return
        self.started, self.restart_at = now, None
        log.warning("worker %s started again (pid %d)", self.command.name, self.process.pid)


def run_workers(
    path: Path, pool: str, client: redis.Redis, env: dict[str, str] | None = None
) -> None:
    """Run the profile's workers until SIGTERM or SIGINT, starting again any that dies;
    SlotsInUse, before starting any, if another live process owns a phase's slots."""
    commands = phase_commands(path, pool, env)
    for command in commands:
        check_free(client, pool, command.host, command.phase.value)
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    watched: list[PhaseProcess] = []
    try:
        for command in commands:
            watched.append(PhaseProcess.start(command))
        while not stopping.wait(0.2):
            now = time.monotonic()
            for each in watched:
                each.check(now)
    finally:
        stop_workers({each.command.name: each.process for each in watched})
