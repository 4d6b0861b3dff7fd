"""``sealpool.supervise``: the supervisor tick as a Celery task, for ``celery beat``."""

from __future__ import annotations

import os
import socket

from sealpool.app import app
from sealpool.runtime import runtime
from sealpool.supervisor.tick import Supervisor

_supervisors: dict[str, Supervisor] = {}


@app.task(name="sealpool.supervise", ignore_result=True)
def supervise(pool: str) -> dict[str, object]:
    """One tick of this process's supervisor of ``pool`` (it acts only while it leads)."""
    if pool not in _supervisors:
        name = f"beat-worker@{socket.gethostname()}:{os.getpid()}"
        _supervisors[pool] = Supervisor(runtime(pool), name)
    report = _supervisors[pool].tick()
    return {"leader": report.leader, "started": len(report.started)}
