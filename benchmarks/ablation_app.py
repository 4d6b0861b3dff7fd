"""The ablation farm_bench.py and scenario_bench.py run beside sealpool: sealpool minus its
locality and priority — the same tasks, store, leases and sim backend, but Celery's defaults
for the rest: the plain threads pool, prefetch 4 per process, no per-host queues (temp phases
go to any host, whose temp directory is shared, as over NFS), no priorities. Run with
SEALPOOL_HOST_BINDING=false. (The plain-Celery baseline is naive_app.py.)"""

from __future__ import annotations

from typing import Any

from sealpool import routing
from sealpool.app import app


def naive_route(
    name: str, args: Any, kwargs: dict[str, Any], options: Any, task: Any = None, **_: Any
) -> dict[str, Any] | None:
    """One shared queue per phase, no priority."""
    phase = routing.TASK_PHASES.get(name)
    return None if phase is None else {"queue": routing.queue_name(kwargs["pool"], phase)}


app.conf.update(
    worker_pool="threads",
    task_routes=(naive_route,),
    worker_prefetch_multiplier=4,
    worker_disable_prefetch=False,
    broker_transport_options={"visibility_timeout": 3600},
)
