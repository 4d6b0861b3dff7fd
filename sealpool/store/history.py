"""A sector's history: its live stream, and what is kept once the sector is final.

While a sector is being sealed every event goes to its own stream. When it reaches Proving
or Aborted the stream is compacted as the :class:`HistoryPolicy` says: archived as one
entry of the pool's shared archive stream (kept ``keep_days``), dropped, or kept as it
is. The record keeps the last completed run of each phase either way (``Sector.runs``),
so phase times (``sealpool ratio``) and ``sealpool sectors show`` survive the archive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sealpool.store.states import PIPELINE, SectorState, next_state

HistoryMode = Literal["archive", "drop", "keep"]
# States whose history is compacted on entry: nothing happens to a sector there any more.
SUMMARY = "(history compacted: the last run of the phase)"
COMPACTED: frozenset[SectorState] = frozenset({SectorState.PROVING, SectorState.ABORTED})


@dataclass(frozen=True)
class HistoryPolicy:
    """What becomes of a final sector's history stream."""

    mode: HistoryMode = "archive"
    keep_days: float = 7.0

    def request(self, target: SectorState) -> dict[str, Any]:
        """The compaction fields of a transition request into ``target`` (none: keep)."""
        if target not in COMPACTED or self.mode == "keep":
            return {}
        return {"compact": self.mode, "archive_ms": int(self.keep_days * 86_400_000)}


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded event in a sector's life."""

    at_ms: int
    actor: str
    event: str
    from_state: str
    to_state: str
    detail: str


def from_stream(entries: Iterable[tuple[str, Mapping[str, str]]]) -> list[HistoryEntry]:
    """The entries of a live history stream (an XRANGE reply)."""
    return [
        HistoryEntry(int(f["at"]), f["actor"], f["event"], f["from"], f["to"], f["detail"])
        for _id, f in entries
    ]


def from_archive(fields: Mapping[str, str]) -> list[HistoryEntry]:
    """The entries of one archived history (an entry of the archive stream)."""
    first = int(fields["at"])
    return [
        HistoryEntry(first + int(offset), actor, event, before, after, detail)
        for offset, actor, event, before, after, detail in json.loads(fields["events"])
    ]


def from_runs(created_ms: int, runs: Mapping[str, str]) -> list[HistoryEntry]:
    """A summary of a history no longer stored: each phase's last completed run, as a
    claim and a completion, in pipeline order."""
    entries: list[HistoryEntry] = []
    for phase in PIPELINE:
        if phase.value not in runs:
            continue
        claimed, took, worker = runs[phase.value].split(" ", 2)
        start, after = created_ms + int(claimed), next_state(phase).value
        entries += [
            HistoryEntry(start, worker, "claim", phase.value, phase.value, SUMMARY),
            HistoryEntry(start + int(took), worker, "complete", phase.value, after, SUMMARY),
        ]
    return entries
