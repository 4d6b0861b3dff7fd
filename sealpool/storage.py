"""Where a sector's files live: one directory per sector under a storage root."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psutil

from sealpool.backends.base import SECTOR_BYTES
from sealpool.backends.sim import SCRATCH_BYTES, SEALED_BYTES
from sealpool.errors import ConfigError
from sealpool.store import parse_sector_id

PC1_SCRATCH_FACTOR = 12  # unsealed copy + 11 layers


def scratch_bytes(backend: str, sector_size: str) -> int:
    """Scratch one sector takes: PC1's ≈ 12 sector sizes, or the sim backend's small files."""
    if backend == "sim":
        return SCRATCH_BYTES
    return PC1_SCRATCH_FACTOR * SECTOR_BYTES[sector_size]


def sealed_bytes(backend: str, sector_size: str) -> int:
    """Long-term storage one sealed sector takes: its size, or the sim backend's small files."""
    return SEALED_BYTES if backend == "sim" else SECTOR_BYTES[sector_size]


def format_bytes(size: int) -> str:
    """``412316860416`` → ``"384.0 GiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{value:.1f} TiB"


def sector_dir(root: Path, sector_id: str) -> Path:
    """``root/<sector_id>``, after checking the id so the path can't leave ``root``."""
    parse_sector_id(sector_id)
    path = (root / sector_id).resolve()
    if path.parent != root.resolve():
        raise ConfigError(f"sector directory {path} escapes storage root {root}")
    return path


def roomiest(roots: Sequence[Path]) -> Path:
    """The root with the most free space (created if missing)."""
    if not roots:
        raise ConfigError("no storage directory configured")
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    return max(roots, key=lambda root: psutil.disk_usage(str(root)).free)
