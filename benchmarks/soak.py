"""Soak: a farm sealing through kill -9 of workers, launchers, supervisors and Redis itself.

Starts an embedded Redis (AOF on), ``--hosts`` hosts each run by a real ``sealpool worker
--profile`` launcher, and ``--supervisors`` ``sealpool supervisor`` processes, then creates
``--sectors`` time-scaled CC sectors. For ``--minutes`` of wall time, every ``--every``
seconds it kill -9s one of: a phase process (its launcher restarts it), a launcher (its
phase processes die with it; the soak starts it again), a supervisor (started again), or
the Redis server (started again on the same port from its AOF). Then it waits for every
sector to end and checks the history of each:

* ``unfinished`` — sectors neither Proving nor Failed with a reason (goal 0);
* ``overlapping_attempts`` — a phase claimed again before its previous attempt ended, i.e.
  two runners at once (goal 0);
* ``stale_scratch_writes_refused`` — writes a stale attempt tried and the scratch token
  refused (the fence at work; any number);
* ``failed`` — sectors Failed, each with its reason printed.

Not part of CI's run (it takes ``--minutes`` plus the drain). Run::

    python benchmarks/soak.py --minutes 5 --sectors 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import redis
from rich.progress import Progress

from sealpool import server
from sealpool.farm import DEMO_SLOTS, sim_profile
from sealpool.store import TERMINAL, HistoryEntry, SectorState, SectorStore

from _server import print_figures

S = SectorState
ENDS_AN_ATTEMPT = {"complete", "retry", "fail", "release", "take-over", "restart", "abort",
                   "reticket", "resume"}  # fmt: skip
KINDS = ("phase process", "launcher", "supervisor", "redis")
PHASE_SECONDS = {"AddPiece": 60, "PreCommit1": 5400, "PreCommit2": 600, "PreCommitting": 60,
                 "Commit1": 30, "Commit2": 600, "Committing": 60, "Finalize": 60}  # fmt: skip


def overlapping_attempts(history: list[HistoryEntry]) -> int:
    """Claims of a phase made while an earlier claim of the sector had not ended."""
    running, overlaps = False, 0
    for entry in history:
        if entry.event == "claim":
            overlaps += running
            running = True
        elif entry.event in ENDS_AN_ATTEMPT:
            running = False
    return overlaps


class Soak:
    """The farm's processes, and how to kill and revive each kind."""

    def __init__(
        self, root: Path, hosts: int, supervisors: int, env: dict[str, str], kinds: list[str]
    ) -> None:
        self.root, self.env, self.kinds = root, env, kinds
        self.hosts = [f"soak-{i}" for i in range(hosts)]
        self.launchers: dict[str, subprocess.Popen[bytes]] = {}
        self.supervisors: dict[str, subprocess.Popen[bytes]] = {}
        self.supervisor_names = [f"sup-{i}" for i in range(supervisors)]
        self.kills: Counter[str] = Counter()

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        output = (self.root / "logs" / f"{log}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "sealpool", *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )

    def start(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        for host in self.hosts:
            temp, sealed = self.root / host / "temp", self.root / host / "sealed"
            temp.mkdir(parents=True), sealed.mkdir(parents=True)
            (self.root / f"{host}.toml").write_text(sim_profile(host, [temp], [sealed], DEMO_SLOTS))
            self.start_launcher(host)
        for name in self.supervisor_names:
            self.supervisors[name] = self._spawn(["supervisor", "--name", name], name)

    def start_launcher(self, host: str) -> None:
        argv = ["worker", "--profile", str(self.root / f"{host}.toml")]
        self.launchers[host] = self._spawn(argv, host)

    def strike(self, data_dir: Path) -> str:
        """kill -9 something, and start again what nothing else restarts; what was hit."""
        kind = random.choice(self.kinds)
        if kind == "phase process":
            host = random.choice(self.hosts)
            children = psutil.Process(self.launchers[host].pid).children()
            if children:
                random.choice(children).send_signal(signal.SIGKILL)
        elif kind == "launcher":
            host = random.choice(self.hosts)
            children = psutil.Process(self.launchers[host].pid).children()
            self.launchers[host].kill()
            self.launchers[host].wait()
            psutil.wait_procs(children, timeout=120)  # they die with it (parent-death signal)
            self.start_launcher(host)
        elif kind == "supervisor":
            name = random.choice(self.supervisor_names)
            self.supervisors[name].kill()
            self.supervisors[name].wait()
            self.supervisors[name] = self._spawn(["supervisor", "--name", name], name)
        else:
            info = server.status(data_dir)
            if info is not None:
                os.kill(info.pid, signal.SIGKILL)
                time.sleep(random.uniform(0.5, 5.0))  # down for a moment
            server.start(data_dir)
        self.kills[kind] += 1
        return kind

    def stop(self) -> None:
        for process in [*self.supervisors.values(), *self.launchers.values()]:
            process.send_signal(signal.SIGTERM)
        for process in [*self.supervisors.values(), *self.launchers.values()]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sealpool-soak-") as tmp:
        root = Path(tmp)
        data_dir = root / "redis"
        info = server.start(data_dir)
        try:
            pool = f"soak-{uuid.uuid4().hex[:6]}"
            env = {
                **os.environ, "SEALPOOL_REDIS_URL": info.url, "SEALPOOL_KEY_PREFIX": pool,
                "SEALPOOL_TIME_SCALE": str(args.time_scale), "SEALPOOL_SECTOR_SIZE": "2KiB",
                "SEALPOOL_PHASE_SECONDS": json.dumps(PHASE_SECONDS), "SEALPOOL_LEASE_S": "10",
                "SEALPOOL_HEARTBEAT_S": "1", "SEALPOOL_TICK_S": "1",
                "SEALPOOL_LOST_MESSAGE_S": "10",
                "SEALPOOL_HOST_LOST_GRACE_S": "30", "SEALPOOL_TICKET_CONFIDENCE": "10",
                "SEALPOOL_CREATE_INTERVAL_S": "0", "SEALPOOL_LOOKAHEAD": "4",
            }  # fmt: skip
            soak = Soak(root, args.hosts, args.supervisors, env, args.kill.split(","))
            client = redis.Redis.from_url(info.url, decode_responses=True)
            store = SectorStore(client, prefix=pool)
            ids = [s.id for s in store.create_many("f01000", "cc", args.sectors)]
            began = time.monotonic()
            soak.start()
            try:
                with Progress(transient=True) as progress:
                    chaos = progress.add_task("kill -9 every few seconds", total=args.minutes * 60)
                    while (elapsed := time.monotonic() - began) < args.minutes * 60:
                        time.sleep(args.every)
                        progress.update(chaos, completed=elapsed, description=soak.strike(data_dir))
                    sealed = progress.add_task("sectors ending", total=len(ids))
                    deadline = time.monotonic() + args.drain_s
                    while time.monotonic() < deadline:
                        done = _ended(store, ids)
                        progress.update(sealed, completed=done)
                        if done == len(ids):
                            break
                        time.sleep(1)
            finally:
                soak.stop()
                wall_s = time.monotonic() - began
            return _figures(store, ids, soak.kills, wall_s)
        finally:
            server.stop(data_dir)  # killed or not, no server outlives the soak


def _figures(store: SectorStore, ids: list[str], kills: Counter[str], wall_s: float) -> dict:
    """What the soak's sectors' records and histories say."""
    sectors = store.get_many(ids)
    histories = {s.id: store.history(s.id) for s in sectors}
    failed = [s for s in sectors if s.state is S.FAILED]
    for sector in failed:
        print(f"failed {sector.id} in {sector.failed_phase}: {sector.last_error}")
    return {
        "sectors": len(ids),
        "proving": sum(s.state is S.PROVING for s in sectors),
        "failed": len(failed),
        "failed_without_reason": sum(not s.last_error for s in failed),
        "unfinished": sum(s.state not in TERMINAL for s in sectors),
        "overlapping_attempts": sum(overlapping_attempts(h) for h in histories.values()),
        "stale_scratch_writes_refused": sum(
            "belongs to attempt" in e.detail for h in histories.values() for e in h
        ),
        "messages_reissued": sum(e.event == "reissue" for h in histories.values() for e in h),
        **{f"kills_{kind.replace(' ', '_')}": n for kind, n in kills.items()},
        **{f"counter_{name}": n for name, n in store.counters().items()},
        "wall_s": wall_s,
    }


def _ended(store: SectorStore, ids: list[str]) -> int:
    try:
        return sum(s.state in TERMINAL for s in store.get_many(ids))
    except redis.RedisError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="Wall minutes of chaos.")
    parser.add_argument("--every", type=float, default=5.0, help="Seconds between kills.")
    parser.add_argument("--sectors", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--supervisors", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=1800.0)
    parser.add_argument("--drain-s", type=float, default=900.0, help="Wait for sectors after.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--kill",
        default=",".join(KINDS),
        help=f"What to kill -9, comma-separated, among: {', '.join(KINDS)}.",
    )
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if unknown := set(args.kill.split(",")) - set(KINDS):
        parser.error(f"--kill: unknown {', '.join(sorted(unknown))}; expected {', '.join(KINDS)}")
    random.seed(args.seed)
    goals = {"unfinished": "0", "overlapping_attempts": "0", "failed_without_reason": "0"}
    print_figures("soak", run(args), goals, args.json)


if __name__ == "__main__":
    main()
