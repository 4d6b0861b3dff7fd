"""A plain Celery sealing pipeline, as a Celery user would write it: no sealpool code.

One task per phase, a ``celery.chain`` per sector (each task passes on where the sector's
files are), ``acks_late``, Celery's default prefetch (4 messages per worker process), no
priorities, one shared queue per phase. The tasks do the simulated work sealpool's sim
backend does: sleep the phase's time (drawn from the same ±spread, seeded, times the host's
factor) and write small files. Each simulated host keeps its files in its own directory,
``<root>/<host>``; a phase that runs on another host than the one holding the sector's files
copies them first, counting the bytes and the seconds, and taking as long as the 32 GiB
sector's files they stand for take over a ``NAIVE_LINK_GBPS`` link (10 GbE by default).
Files on a host that died (``<root>/<host>/DEAD``) are gone: the phase fails, and with it
the sector's chain.

Workers run the ``threads`` pool: the tasks sleep and write files (a real farm's task waits
on its sealing binary), so a thread per slot is what they need, and 20-odd prefork pools
would take the 2-core benchmark machine's CPU from the workers being measured.
``visibility_timeout`` is set, as the Celery docs advise for long tasks, above the longest
phase: twice a PC1 of farm time.

Configured by environment: ``NAIVE_BROKER``, ``NAIVE_RUN`` (queue and key prefix),
``NAIVE_ROOT``, ``NAIVE_HOST``, ``NAIVE_TIME_SCALE``, ``NAIVE_PHASE_SECONDS`` (JSON),
``NAIVE_SPREAD``, ``NAIVE_SEED``, ``NAIVE_HOST_FACTOR`` (JSON), ``NAIVE_LINK_GBPS``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain
from celery.signals import task_failure

PHASES = ("ap", "pc1", "pc2", "precommit", "waitseed", "c1", "c2", "commit", "finalize")
TEMP_PHASES = frozenset({"ap", "pc1", "pc2", "c1", "finalize"})
BACKEND_PHASES = TEMP_PHASES | {"c2"}
SEED_WAIT_EPOCHS = 156  # challenge delay 150 + 6 epochs of confidence, as sealpool's sim chain
# the prove-commit is waited for before Finalize (lotus' CommitWait; sealpool's default
# message_confidence): 5 epochs after the message's own time
COMMIT_CONFIDENCE_EPOCHS = 5
EPOCH_S = 30.0
FILE_BYTES = 4096
OUTPUT_FILES = {  # the sim backend's files: unsealed, 11 layers, cache files, sealed
    "ap": ["unsealed"],
    "pc1": [f"cache/sc-02-data-layer-{n}.dat" for n in range(1, 12)],
    "pc2": ["cache/p_aux", "cache/t_aux", "cache/tree-r-last.dat", "sealed"],
}

GiB = 1 << 30
FARM_FILE_BYTES = {  # what each small file stands for in a 32 GiB sector's temp data
    "unsealed": 32 * GiB, "sealed": 32 * GiB, "tree-r-last.dat": 9 * GiB,
    **{f"sc-02-data-layer-{n}.dat": 32 * GiB for n in range(1, 12)},
}  # fmt: skip
LINK_BYTES_S = float(os.environ.get("NAIVE_LINK_GBPS", "10")) * 1e9 / 8  # 10 GbE

RUN = os.environ.get("NAIVE_RUN", "naive")
ROOT = Path(os.environ.get("NAIVE_ROOT", "/tmp/naive-farm"))
HOST = os.environ.get("NAIVE_HOST", "host")
TIME_SCALE = float(os.environ.get("NAIVE_TIME_SCALE", "1000"))
FARM_SECONDS: dict[str, float] = json.loads(os.environ.get("NAIVE_PHASE_SECONDS", "{}"))
SPREAD = float(os.environ.get("NAIVE_SPREAD", "0"))
SEED = int(os.environ.get("NAIVE_SEED", "0"))
HOST_FACTOR: dict[str, float] = json.loads(os.environ.get("NAIVE_HOST_FACTOR", "{}"))

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER", "redis://localhost:6379/0"))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_routes={f"naive.{phase}": {"queue": f"{RUN}.{phase}"} for phase in PHASES},
    broker_transport_options={
        "visibility_timeout": 2 * FARM_SECONDS.get("pc1", 3 * 3600.0) / TIME_SCALE
    },
)
_redis: redis.Redis | None = None


def client() -> redis.Redis:
    """This process's connection to the run's bookkeeping (the broker's Redis)."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(app.conf.broker_url)
    return _redis


def wall_seconds(sector: str, phase: str) -> float:
    """The phase's time on this host: its farm time times a seeded ±SPREAD draw and the
    host's factor, at TIME_SCALE."""
    farm = FARM_SECONDS.get(phase, 0.0)
    if phase == "waitseed":
        farm = SEED_WAIT_EPOCHS * EPOCH_S
    if phase == "commit":
        farm += COMMIT_CONFIDENCE_EPOCHS * EPOCH_S
    if phase in BACKEND_PHASES:  # as sealpool's sim backend (the chain's phases: as is)
        draw = random.Random(f"{SEED}:{sector}:{phase}").uniform(1 - SPREAD, 1 + SPREAD)
        farm *= draw * HOST_FACTOR.get(HOST, 1.0)
    return farm / TIME_SCALE


def temp_dir(host: str, sector: str) -> Path:
    return ROOT / host / "temp" / sector


def fetch_files(job: dict[str, Any]) -> tuple[int, int, float]:
    """Copy the sector's temp files here from the host that has them, taking the time the
    32 GiB sector's files they stand for take over the link: (bytes, farm bytes, seconds)."""
    home = job["host"]
    if home is None or home == HOST:
        return 0, 0, 0.0
    if (ROOT / home / "DEAD").exists():
        raise RuntimeError(f"{job['sector']}: its files were on {home}, which died")
    began = time.perf_counter()
    source, target = temp_dir(home, job["sector"]), temp_dir(HOST, job["sector"])
    shutil.copytree(source, target, dirs_exist_ok=True)
    files = [path for path in target.rglob("*") if path.is_file()]
    farm_bytes = sum(FARM_FILE_BYTES.get(path.name, 0) for path in files)
    shutil.rmtree(source, ignore_errors=True)
    time.sleep(max(0.0, farm_bytes / LINK_BYTES_S / TIME_SCALE - (time.perf_counter() - began)))
    copied = sum(path.stat().st_size for path in files)
    return copied, farm_bytes, time.perf_counter() - began


def run_phase(phase: str, job: dict[str, Any]) -> dict[str, Any]:
    """Do ``phase`` of the job's sector here; record the run; the job for the next phase."""
    started = time.time()
    fetch = phase in TEMP_PHASES and phase != "ap"
    copied, farm_bytes, copy_s = fetch_files(job) if fetch else (0, 0, 0.0)
    time.sleep(wall_seconds(job["sector"], phase))
    scratch = temp_dir(HOST, job["sector"])
    for name in OUTPUT_FILES.get(phase, []):
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_BYTES))
    if phase == "finalize":
        sealed = ROOT / HOST / "sealed" / job["sector"]
        sealed.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch / "sealed", sealed / "sealed")
        shutil.rmtree(scratch)
    ended = time.time()
    record = {"sector": job["sector"], "phase": phase, "host": HOST, "started": started,
              "ended": ended, "copied_bytes": copied, "farm_bytes": farm_bytes,
              "copy_s": copy_s}  # fmt: skip
    pipe = client().pipeline()
    pipe.rpush(f"{RUN}:runs", json.dumps(record))
    if phase == "pc1":
        pipe.incr(f"{RUN}:pc1-done")
    if phase == "finalize":
        pipe.hset(f"{RUN}:proving", job["sector"], ended)
    pipe.execute()
    return {**job, "host": HOST if phase in TEMP_PHASES else job["host"]}


def _phase_task(phase: str) -> Any:
    @app.task(name=f"naive.{phase}")
    def task(job: dict[str, Any]) -> dict[str, Any]:
        return run_phase(phase, job)

    return task


TASKS = {phase: _phase_task(phase) for phase in PHASES}


@task_failure.connect
def count_lost(sender: Any = None, **_: Any) -> None:
    """A failed phase ends its sector's chain: count the sector lost (and, for the feeder,
    whether it was lost before its PC1 ended)."""
    pipe = client().pipeline()
    pipe.incr(f"{RUN}:lost")
    if sender is not None and sender.name in ("naive.ap", "naive.pc1"):
        pipe.incr(f"{RUN}:lost-before-pc1")
    pipe.execute()


def seal(sector: str) -> None:
    """Send the sector's chain: every phase in order, each on its own queue."""
    first, *rest = PHASES
    chain(TASKS[first].s({"sector": sector, "host": None}), *(TASKS[p].s() for p in rest))()
