"""Test helpers that drive sectors with the store's public API."""

from __future__ import annotations

import time
from collections.abc import Callable

from sealpool.store import PIPELINE, Sector, SectorState, SectorStore
from sealpool.worker_profiles.plan import SlotPlan


def place(store: SectorStore, state: SectorState, kind: str = "cc") -> Sector:
    """A new sector brought to ``state`` by legal operator moves."""
    sector = store.create("f01000", kind)  # type: ignore[arg-type]
    if state in (SectorState.FAILED, SectorState.ABORTED):
        return store.move(sector.id, state, actor="test")
    for step in PIPELINE[1 : PIPELINE.index(state) + 1]:
        sector = store.move(sector.id, step, actor="test")
    return sector


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after a generous ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s:.0f} s: {what or condition}")
        time.sleep(0.02)


def cpu_slots(phase: str, count: int) -> list[SlotPlan]:
    """``count`` slots of ``phase`` with no cores or GPUs."""
    return [SlotPlan(phase, i, None, None, {}) for i in range(count)]
