"""The scenario on sealpool's real worker processes: sealpool itself, or its ablation
(sealpool minus locality and priority, benchmarks/ablation_app.py).

The supervisor ticks in this process, packing arriving deals into sectors and filling the
PC1 slots with CC sectors (``cc_fill``); ``pc1-c``'s worker processes are killed -9
halfway (unless the run is without a kill), and the supervisor restarts its sectors
elsewhere once the host is lost.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from scenario_farm import (
    GPU_PHASES,
    HOST_FACTOR,
    HOSTS,
    KILLED,
    LOOKAHEAD,
    PHASE_SECONDS,
    SPREAD,
    Outcome,
    Run,
    kill_time,
)

from sealpool.backends import SECTOR_BYTES
from sealpool.deals import DealBook
from sealpool.farm import LocalFarm, sim_profile
from sealpool.metrics import phase_runs
from sealpool.runtime import runtime
from sealpool.store import SectorState, SectorStore
from sealpool.supervisor import Supervisor

from _server import benchmark_pythonpath

S = SectorState
TICK_S = 0.25


class ScenarioFarm(LocalFarm):
    """The scenario's hosts: PC2 and C2 of a PC1 host share its GPU 0 (a GPU group)."""

    def profile_text(self, host: str, temp: list[Path], sealed: list[Path]) -> str:
        slots = {S(phase): n for phase, n in HOSTS[host].items()}
        shared = {phase: n for phase, n in slots.items() if phase.value not in GPU_PHASES}
        text = sim_profile(host, temp, sealed, shared)
        if len(shared) == len(slots):
            return text
        for phase in GPU_PHASES:
            text += f"\n[phases.{phase}]\nslots = 1\ngpus = [[0]]\n"
        return text + f"\n[[gpu_groups]]\nphases = {json.dumps(GPU_PHASES)}\ngpus = [0]\n"


def run(
    mode: str, duration_s: float, time_scale: float, arrivals: list[float], kill: bool
) -> Outcome:
    """Run the scenario for ``duration_s`` with deals arriving at ``arrivals`` (seconds
    after the start), killing ``KILLED`` halfway if ``kill``; what happened."""
    ablation = mode == "ablation"
    pool = f"scenario-{mode}-{uuid.uuid4().hex[:6]}"
    env = {
        "SEALPOOL_KEY_PREFIX": pool,
        "SEALPOOL_TIME_SCALE": str(time_scale),
        "SEALPOOL_PHASE_SECONDS": json.dumps(PHASE_SECONDS),
        "SEALPOOL_SIM_SPREAD": str(SPREAD),
        "SEALPOOL_SIM_HOST_FACTOR": json.dumps(HOST_FACTOR),
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_PRECOMMIT_BATCH_WAIT_S": "0",  # each message sent at once, as the baseline's
        "SEALPOOL_COMMIT_BATCH_WAIT_S": "0",
        "SEALPOOL_CC_FILL": "true",
        "SEALPOOL_LOOKAHEAD": str(LOOKAHEAD),
        "SEALPOOL_CREATE_INTERVAL_S": "0",
        "SEALPOOL_HEARTBEAT_S": "0.5",
        "SEALPOOL_LEASE_S": "5",
        "SEALPOOL_HOST_LOST_GRACE_S": "5",
        "SEALPOOL_HOST_BINDING": "false" if ablation else "true",
        "PYTHONPATH": benchmark_pythonpath(),
    }
    os.environ.update(env)
    if ablation:
        import ablation_app  # noqa: F401  (reconfigures the Celery app before first use)
    rt = runtime(pool)
    store, deals = rt.store, DealBook(rt.store.client, pool)
    sector_bytes = SECTOR_BYTES[rt.settings.sector_size]
    boss = Supervisor(rt, "scenario")
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(TICK_S):
            boss.tick()

    arrived: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sealpool-scenario-") as root:
        farm = ScenarioFarm(
            pool, list(HOSTS), Path(root), env=env,
            app_module="ablation_app" if ablation else "sealpool.app", shared_temp=ablation,
        )  # fmt: skip
        with farm:
            farm.wait_ready()
            t0 = time.time()
            thread = threading.Thread(target=supervise, daemon=True)
            thread.start()
            killed_at = kill_time(t0, duration_s, kill)
            events = [(t0 + at, n) for n, at in enumerate(arrivals, 1)]
            events += [(killed_at, 0)] if kill else []
            for at, deal in sorted(events):
                time.sleep(max(0.0, at - time.time()))
                if deal:
                    added = deals.add(deal, sector_bytes, sector_bytes=sector_bytes).added_ms
                    arrived[str(deal)] = added / 1000
                else:
                    farm.kill_host(KILLED)
            time.sleep(max(0.0, t0 + duration_s - time.time()))
            stop.set()
            thread.join()
            boss.lease.resign()
            return _outcome(store, t0, killed_at, arrived)


def _outcome(store: SectorStore, t0: float, killed_at: float, arrived: dict[str, float]) -> Outcome:
    ids = [i for state in SectorState for i in store.ids_in_state(state)]
    sectors = store.get_many(ids)
    histories = {s.id: store.history(s.id) for s in sectors}
    runs = [
        Run(r.sector_id, r.phase, r.host, r.started_ms / 1000, r.ended_ms / 1000)
        for sector_id, history in histories.items()
        for r in phase_runs(sector_id, history)
        if r.outcome == "complete"
    ]
    proving = {
        sector_id: entry.at_ms / 1000
        for sector_id, history in histories.items()
        for entry in history
        if entry.to_state == S.PROVING.value
    }
    cross = sum(
        int(out.get("cross_host_bytes", 0))
        for s in sectors
        for out in s.outputs.values()
        if isinstance(out, dict)
    )
    return Outcome(
        t0, killed_at, runs, proving, arrived,
        {str(d): s.id for s in sectors for d in s.deal_ids if str(d) in arrived},
        cross,
        {"sectors_failed": sum(1 for s in sectors if s.state is S.FAILED)},
    )  # fmt: skip
