"""The contract between a phase task and whatever computes the phase."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SECTOR_BYTES: dict[str, int] = {
    "2KiB": 2 << 10,
    "8MiB": 8 << 20,
    "512MiB": 512 << 20,
    "32GiB": 32 << 30,
    "64GiB": 64 << 30,
}


@dataclass(frozen=True)
class Slot:
    """The resources one running phase gets on its host."""

    host: str
    temp_dirs: tuple[Path, ...]
    sealed_dirs: tuple[Path, ...]
    cores: tuple[int, ...] | None = None
    gpus: tuple[int, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseRequest:
    """Everything a backend is told about the phase to compute (sent as JSON to processors)."""

    sector_id: str
    miner: str
    number: int
    phase: str
    sector_size: int
    temp_path: str
    sealed_path: str | None
    ticket: dict[str, Any] | None
    seed: dict[str, Any] | None
    deal_ids: list[int]
    inputs: dict[str, Any]


class Backend(Protocol):
    """Computes one phase of one sector and returns that phase's outputs."""

    def run(self, request: PhaseRequest, slot: Slot, cancelled: threading.Event) -> dict[str, Any]:
        """Compute the phase; raise PhaseError on failure. Stop early once ``cancelled``."""
        ...
