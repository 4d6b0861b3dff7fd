"""sealpool's Celery app plus a task that does nothing: overhead_bench.py runs it to measure
Celery's own cost per message with sealpool's settings (the floor under sealpool's)."""

from __future__ import annotations

from typing import Any

from sealpool.app import app

NOOP = "bench.noop"


@app.task(name=NOOP)
def noop(**_: Any) -> None:
    """Nothing: the whole cost is Celery's and the broker's."""
