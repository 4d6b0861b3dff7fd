"""``sealpool worker --profile FILE``: the Celery worker processes that realise a profile.

One ``celery worker`` process per phase of the profile, with exactly that phase's number of
slots as its concurrency (a threads pool), consuming the phase's shared queue and, for the
phases that touch temp files, this host's queue. Prefetch is off (see sealpool.app), so a
process never holds more messages than it has free slots. SIGTERM or SIGINT is passed on
to every process: they take no new work and hand their running phases back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from sealpool.errors import ConfigError
from sealpool.routing import QUEUE_NAMES, host_queues
from sealpool.store import SectorState
from sealpool.worker_profiles.model import Profile, load_profile
from sealpool.worker_profiles.plan import Plan, plan_profile

log = logging.getLogger(__name__)
STOP_GRACE_S = 60.0


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
    """The profile and its plan on this machine; ConfigError listing every problem."""
    profile = load_profile(path)
    plan = plan_profile(profile, path)
    if plan.errors:
        raise ConfigError("\n".join(plan.errors))
    return profile, plan


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
    profile, plan = checked_profile(path)
    base = {
        **os.environ,
        **(env or {}),
        "SEALPOOL_PROFILE": str(path.resolve()),
        "SEALPOOL_HOST": profile.host,
        "SEALPOOL_KEY_PREFIX": pool,
    }
    processes = {}
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    for phase in QUEUE_NAMES:
        if profile.phase_slots(phase) is None or (phases is not None and phase not in phases):
            continue
        name = node_name(phase, profile.host)
        logfile = log_dir / f"{name}.log" if log_dir else None
        output = logfile.open("ab") if logfile else None  # else: our own stdout/stderr
        processes[name] = subprocess.Popen(
            worker_argv(pool, profile, plan, phase, logfile=logfile, app_module=app_module),
            env={**base, "SEALPOOL_WORKER_PHASE": phase.value},
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )  # fmt: skip
        if output:
            output.close()  # the child holds its own descriptor
    return processes


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


def run_workers(path: Path, pool: str) -> int:
    """Run the profile's workers until a signal (or one of them dies); the exit code."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    processes = start_workers(path, pool)
    code = 0
    try:
        while not stopping:
            dead = [name for name, process in processes.items() if process.poll() is not None]
            if dead:
                log.error("worker %s exited; stopping the others", ", ".join(dead))
                code = 1
                break
            time.sleep(0.2)
    finally:
        stop_workers(processes)
    return code
