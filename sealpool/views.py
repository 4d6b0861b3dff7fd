"""What the CLI's ``--json`` and the web dashboard show, as plain dicts and lists.

Each function reads the pool once and returns JSON-ready data; ``sealpool pool stats``,
``workers``, ``ratio`` and ``sectors show`` print these, and ``sealpool web`` renders them,
so the page and the CLI always agree.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sealpool.config import Settings
from sealpool.miners import miner_rows
from sealpool.store import WORK_PHASES, SectorState, SectorStore
from sealpool.supervisor.ratio import measured_runs, phase_times, suggest
from sealpool.supervisor.stuck import phases_paused_everywhere, phases_without_consumers
from sealpool.worker_control import pauses
from sealpool.worker_profiles.slots import RUNNING, live_consumers, live_slots, slot_reports


def pool_stats(store: SectorStore, settings: Settings) -> dict[str, Any]:
    """Sectors per state and kind, the total, the event counters, and the work phases that
    hold sectors no live worker runs or every live one is paused for."""
    counts = store.counts()
    consumers = live_consumers(store.client, store.prefix, 3 * settings.heartbeat_s)
    paused = pauses(store.client, store.prefix)
    return {
        "states": {state.value: by_kind for state, by_kind in counts.items()},
        "total": sum(sum(by_kind.values()) for by_kind in counts.values()),
        "counters": store.counters(),
        "no_live_worker": phases_without_consumers(counts, consumers, WORK_PHASES),
        "paused_everywhere": phases_paused_everywhere(counts, consumers, paused, WORK_PHASES),
        "miners": miner_rows(store, settings),
    }


def slots(store: SectorStore) -> list[dict[str, Any]]:
    """Every registered slot of every host: idle, busy (its sector), paused, draining or
    lost, and its busy share."""
    return [asdict(report) for report in slot_reports(store.client, store.prefix)]


def ratio(store: SectorStore, settings: Settings, pc1: int | None = None) -> dict[str, Any]:
    """Suggested slots per phase for ``pc1`` PC1 slots (default: the live ones), from
    measured phase times, with the bottleneck and sectors per day."""
    current = live_slots(slot_reports(store.client, store.prefix))
    times = phase_times(measured_runs(store), settings.wall_phase_seconds)
    return asdict(suggest(times, pc1 or current.get("PreCommit1") or 1, current or None))


def sector(store: SectorStore, sector_id: str) -> dict[str, Any]:
    """One sector's record and its whole history, oldest first."""
    record = store.get(sector_id)
    history = store.history(sector_id)
    return {"sector": record.model_dump(mode="json"), "history": [asdict(h) for h in history]}


def failures(store: SectorStore, limit: int = 20) -> list[dict[str, Any]]:
    """Failed sectors (most urgent first): where and why each failed."""
    return [
        {
            "id": s.id,
            "kind": s.kind,
            "failed_phase": s.failed_phase,
            "host": s.host,
            "last_error": s.last_error,
            "updated_ms": s.updated_ms,
        }
        for s in store.list(SectorState.FAILED, None, limit)
    ]


def pipeline(stats: dict[str, Any], slot_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The states in sealing order, each with its sectors and, for a work phase, its live
    slots and how many of them are busy."""
    rows = []
    for state in SectorState:
        by_kind = stats["states"][state.value]
        live = [s for s in slot_rows if s["phase"] == state.value and s["state"] != "lost"]
        rows.append(
            {
                "state": state.value,
                "sectors": sum(by_kind.values()),
                "slots": len(live) if state in WORK_PHASES else None,
                "busy": sum(s["state"] in RUNNING for s in live) if state in WORK_PHASES else None,
            }
        )
    return rows
