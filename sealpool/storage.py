"""Where a sector's files live: one directory per sector under a storage root; and the
scratch directories a host no longer needs (``sealpool storage gc``)."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from sealpool.backends.base import SECTOR_BYTES
from sealpool.backends.sim import SCRATCH_BYTES, SEALED_BYTES
from sealpool.errors import ConfigError, InvalidSectorId, SealpoolError, SectorNotFound
from sealpool.store import Sector, SectorState, SectorStore, parse_sector_id
from sealpool.store.scratch import ScratchLedger, seal_scratch_bytes


def scratch_bytes(backend: str, sector_size: str) -> int:
    """Scratch one sector takes: lotus' 16.1 sector sizes, or the sim backend's small files."""
    if backend == "sim":
        return SCRATCH_BYTES
    return seal_scratch_bytes(SECTOR_BYTES[sector_size])


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


@dataclass(frozen=True)
class Leftover:
    """A sector's scratch directory that this host no longer needs, and why."""

    sector: str
    root: str
    path: str
    bytes: int
    reason: str


def why_leftover(sector: Sector | None, host: str) -> str | None:
    """Why ``host`` no longer needs the sector's scratch (unknown to the pool, Proving,
    Aborted, Pending, or bound to another host), or None while it may need it: live or
    Failed (a retry or resume may read it) and bound here, or not bound yet (an AddPiece
    about to write here)."""
    if sector is None:
        return "not in the pool"
    if sector.state in (SectorState.PROVING, SectorState.ABORTED, SectorState.PENDING):
        return sector.state.value
    if sector.host and sector.host != host:
        return f"bound to {sector.host}"
    return None


class ScratchCollector:
    """Finds and removes the sector directories under ``roots`` (``host``'s temp paths) that
    no sector needs here any more: what take-overs and restarts leave behind.

    Only directories named like a sector id, directly under a root, are looked at; links
    are never followed, and a directory changed in the last ``min_age_s`` is left alone.
    """

    def __init__(
        self, store: SectorStore, host: str, roots: Sequence[Path], min_age_s: float
    ) -> None:
        self.store, self.host, self.roots, self.min_age_s = store, host, roots, min_age_s
        self.ledger = ScratchLedger(store.client, store.prefix)

    def leftovers(self) -> list[Leftover]:
        """Every directory :meth:`remove` would remove now, with its size; ConfigError if
        the pool holds no sector at all (a wrong Redis or key prefix would make every sector
        directory look unknown)."""
        found = [(root, name) for root in self.roots for name in _sector_dirs(root)]
        if found and not self.store.list(limit=1):
            raise ConfigError(
                f"pool {self.store.prefix!r} holds no sector: wrong redis_url or key_prefix? "
                "no scratch removed"
            )
        sectors = {s.id: s for s in self.store.get_many(name for _root, name in found)}
        leftovers = []
        for root, name in found:
            reason = why_leftover(sectors.get(name), self.host)
            if reason is None:
                continue
            size, changed = _usage(root / name)
            if time.time() - changed >= self.min_age_s:
                leftovers.append(Leftover(name, str(root), str(root / name), size, reason))
        return leftovers

    def remove(self, leftover: Leftover) -> bool:
        """Remove the directory and release the sector's scratch reservation on this host,
        after checking again that it is still a leftover; False if it is not."""
        path = Path(leftover.path)
        try:
            sector: Sector | None = self.store.get(leftover.sector)
        except SectorNotFound:
            sector = None
        if (
            why_leftover(sector, self.host) is None
            or path.is_symlink()
            or not path.is_dir()
            or time.time() - _usage(path)[1] < self.min_age_s
        ):
            return False
        try:
            shutil.rmtree(sector_dir(Path(leftover.root), leftover.sector))
        except OSError as exc:
            raise SealpoolError(f"{path}: cannot remove: {exc.strerror or exc}") from None
        self.ledger.release(self.host, leftover.sector)
        return True


def _sector_dirs(root: Path) -> list[str]:
    """Names of the directories (not links) directly under ``root`` that are sector ids as
    sealpool writes them (``f01000-7``, not ``f01000-007``)."""
    if not root.is_dir():
        return []
    names = []
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                miner, number = parse_sector_id(entry.name)
            except InvalidSectorId:
                continue
            if entry.name == f"{miner}-{number}" and entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    return sorted(names)


def _usage(path: Path) -> tuple[int, float]:
    """Bytes of the files under ``path`` and the newest change time of it or anything in
    it, never following links."""
    size, newest = 0, path.lstat().st_mtime
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(parent, name))
            except FileNotFoundError:
                continue
            newest = max(newest, info.st_mtime)
            if stat.S_ISREG(info.st_mode):
                size += info.st_size
    return size, newest
