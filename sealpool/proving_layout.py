"""Where a sealed sector lands for proving: a lotus storage path.

lotus-miner (and curio) find the files WindowPoSt reads through storage paths: a directory
holding ``sectorstore.json`` (the path's ID and flags) and the subdirectories ``sealed/`` and
``cache/``. Sector 7 of miner f01000 is the file ``sealed/s-t01000-7`` and the directory
``cache/s-t01000-7/`` ("t0" on every network: lotus ``storiface.SectorName``), and the cache
must hold ``p_aux``, ``t_aux`` and the sector size's ``sc-02-data-tree-r-last*.dat`` (the files
lotus ``storage/sealer/faults.go`` checks before proving).

Each sealed root of sealpool is such a path. :func:`declare_store` writes its
``sectorstore.json`` once, for storage only (``CanSeal`` false, ``CanStore`` true), and never
over an existing one (an operator's edit, or lotus' own).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sealpool.errors import ConfigError

META_FILE = "sectorstore.json"
SEALED_DIR, CACHE_DIR = "sealed", "cache"
WEIGHT = 10  # lotus-miner storage attach's default
SMALL_SECTOR_BYTES = 512 << 20  # up to this size, one tree-r-last file
TREE_R_LAST_FILES = {32 << 30: 8, 64 << 30: 16}
MINER = re.compile(r"[ft]0(\d+)")


@dataclass(frozen=True)
class SectorFiles:
    """A sector's files in a lotus storage path."""

    root: Path
    sealed: Path  # the sealed replica, a file
    cache: Path  # the directory of p_aux, t_aux and the tree-r-last files


def sector_name(miner: str, number: int) -> str:
    """``s-t0<actor id>-<number>``, lotus' name of a sector's files; ValueError for a miner
    that is not an ID address or a negative number."""
    if not (found := MINER.fullmatch(miner)) or number < 0:
        raise ValueError(f"sector {miner}-{number}: not an ID address and sector number")
    return f"s-t0{int(found.group(1))}-{number}"


def sector_files(root: Path, miner: str, number: int) -> SectorFiles:
    """Where sector ``number`` of ``miner`` lies in the storage path ``root`` (no disk
    access): names made of digits only, so no path can leave ``root``."""
    name, root = sector_name(miner, number), root.resolve()
    return SectorFiles(root, root / SEALED_DIR / name, root / CACHE_DIR / name)


def find_sector_files(
    sealed: str | Path, roots: Iterable[Path], miner: str, number: int
) -> SectorFiles | None:
    """The sector's files if ``sealed`` is its sealed file in one of ``roots``; else None (a
    path read from the pool's records is trusted no further than that)."""
    if not sealed:
        return None
    resolved = Path(sealed).resolve()
    for root in roots:
        if (files := sector_files(root, miner, number)).sealed == resolved:
            return files
    return None


def cache_names(sector_size: int) -> tuple[str, ...]:
    """The cache files lotus needs to prove a sector of ``sector_size`` bytes."""
    if sector_size <= SMALL_SECTOR_BYTES:
        trees = ("sc-02-data-tree-r-last.dat",)
    else:
        count = TREE_R_LAST_FILES[sector_size]
        trees = tuple(f"sc-02-data-tree-r-last-{index}.dat" for index in range(count))
    return ("p_aux", "t_aux", *trees)


def declare_store(root: Path) -> dict[str, object]:
    """Make ``root`` a lotus storage path (its ``sealed/`` and ``cache/``, and a
    ``sectorstore.json`` unless it has one); the path's metadata. ConfigError if an existing
    ``sectorstore.json`` is not a JSON object with an ``ID``."""
    for directory in (SEALED_DIR, CACHE_DIR):
        (root / directory).mkdir(parents=True, exist_ok=True)
    meta = root / META_FILE
    if not meta.exists():
        _create_once(meta, _new_meta())
    try:
        found = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{meta}: not a readable lotus sectorstore.json: {exc}") from None
    if not isinstance(found, dict) or not isinstance(found.get("ID"), str):
        raise ConfigError(f"{meta}: ID: missing; expected lotus' sectorstore.json")
    return found


def _new_meta() -> dict[str, object]:
    """lotus' LocalStorageMeta of a path that stores finalized sectors and seals none."""
    return {
        "ID": str(uuid.uuid4()), "Weight": WEIGHT, "CanSeal": False, "CanStore": True,
        "MaxStorage": 0, "Groups": [], "AllowTo": [], "AllowTypes": [], "DenyTypes": [],
        "AllowMiners": [], "DenyMiners": [],
    }  # fmt: skip


def _create_once(path: Path, content: dict[str, object]) -> None:
    """Write ``path`` whole, unless another process created it first (a hard link never
    replaces a file, so two workers declaring one root keep one ID)."""
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    draft.write_text(json.dumps(content, indent=2) + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
