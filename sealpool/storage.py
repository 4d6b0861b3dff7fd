"""Where a sector's files live: one directory per sector under a storage root."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psutil

from sealpool.errors import ConfigError
from sealpool.store import parse_sector_id


def sector_dir(root: Path, sector_id: str) -> Path:
    """``root/<sector_id>``, after checking the id so the path can't leave ``root``."""
    parse_sector_id(sector_id)
    path = (root / sector_id).resolve()
    if path.parent != root.resolve():
        raise ConfigError(f"sector directory {path} escapes storage root {root}")
    return path


def inside(roots: Sequence[Path], path: Path) -> bool:
    """Whether ``path`` lies within one of ``roots``."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def roomiest(roots: Sequence[Path]) -> Path:
    """The root with the most free space (created if missing)."""
    if not roots:
        raise ConfigError("no storage directory configured")
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    return max(roots, key=lambda root: psutil.disk_usage(str(root)).free)
