"""Test helpers that drive sectors with the store's public API."""

from __future__ import annotations

from sealpool.store import PIPELINE, Sector, SectorState, SectorStore


def place(store: SectorStore, state: SectorState, kind: str = "cc") -> Sector:
    """A new sector brought to ``state`` by legal operator moves."""
    sector = store.create("f01000", kind)  # type: ignore[arg-type]
    if state in (SectorState.FAILED, SectorState.ABORTED):
        return store.move(sector.id, state, actor="test")
    for step in PIPELINE[1 : PIPELINE.index(state) + 1]:
        sector = store.move(sector.id, step, actor="test")
    return sector
