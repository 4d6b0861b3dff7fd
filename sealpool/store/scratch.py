"""``ScratchLedger``: space reserved on each host's temp paths, so that concurrent sectors
never overbook a disk.

Why a ledger: a sector being sealed writes ~16 sector sizes of scratch over hours. Two
AddPieces that both look at ``df`` at t=0 both see room for one more sector and both pick the
same disk; at t=3h the second PC1 fails with a full disk. Each reservation therefore happens
in one script that sees every other reservation on the host: a path's headroom is its free
space minus what reserved sectors have yet to write (their reservation less what is already
on disk, measured by the caller), capped by the path's configured capacity.

What one sector reserves is :func:`seal_scratch_bytes`: lotus' per-file-type seal overheads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

# Scratch a sector being sealed takes, per file type, in tenths of the sector size: lotus'
# FSOverheadSeal (storage/sealer/storiface/filetype.go). The cache holds the 11 SDR layers,
# tree D (2 sector sizes), tree C and tree R_last: 14.1 sector sizes.
SEAL_OVERHEAD_TENTHS = {"unsealed": 10, "sealed": 10, "cache": 141}


def seal_scratch_bytes(sector_bytes: int) -> int:
    """Scratch one sector takes while sealed (unsealed + sealed + cache files): 16.1 sector
    sizes, as lotus reserves."""
    return sum(SEAL_OVERHEAD_TENTHS.values()) * sector_bytes // 10


# RESERVE scratch for a sector on the path with the most headroom.
# KEYS[1] the host's reservations (hash: sector id → "path\tbytes")
# ARGV[1] sector id, ARGV[2] bytes needed, ARGV[3] number of paths n,
# ARGV[4 .. 3+3n] (path, free bytes, capacity or -1) per path,
# then (sector id, bytes already written) pairs for reserved sectors.
# Returns the path (the same one again for a sector that holds a reservation), or false.
RESERVE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then return string.match(held, '^(.*)\\t') end
local n = tonumber(ARGV[3])
local written = {}
for i = 4 + 3 * n, #ARGV, 2 do written[ARGV[i]] = tonumber(ARGV[i + 1]) end
local reserved, outstanding = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local path, bytes = string.match(all[i + 1], '^(.*)\\t(%d+)$')
  bytes = tonumber(bytes)
  reserved[path] = (reserved[path] or 0) + bytes
  outstanding[path] = (outstanding[path] or 0) + math.max(0, bytes - (written[all[i]] or 0))
end
local need, best, best_room = tonumber(ARGV[2]), nil, -1
for i = 0, n - 1 do
  local path = ARGV[4 + 3 * i]
  local room = tonumber(ARGV[5 + 3 * i]) - (outstanding[path] or 0)
  local capacity = tonumber(ARGV[6 + 3 * i])
  if capacity >= 0 then room = math.min(room, capacity - (reserved[path] or 0)) end
  if room >= need and room > best_room then best, best_room = path, room end
end
if not best then return false end
redis.call('HSET', KEYS[1], ARGV[1], best .. '\\t' .. need)
return best
"""


@dataclass(frozen=True)
class ScratchPath:
    """A temp path as the ledger sees it: where, free bytes now, optional capacity."""

    path: str
    free: int
    capacity: int | None = None


class ScratchLedger:
    """Reservations of scratch space per host, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE)

    def _key(self, host: str) -> str:
        return f"{self.prefix}:scratch:{host}"

    def reservations(self, host: str) -> dict[str, tuple[str, int]]:
        """Sector id → (path, bytes) of every reservation on ``host``."""
        held = self.client.hgetall(self._key(host))
        parts = {sector: value.rsplit("\t", 1) for sector, value in held.items()}
        return {sector: (path, int(size)) for sector, (path, size) in parts.items()}

    def reserve(
        self,
        host: str,
        sector_id: str,
        need: int,
        paths: Sequence[ScratchPath],
        written: Mapping[str, int] | None = None,
    ) -> str | None:
        """Reserve ``need`` bytes for the sector; the chosen path, or None if none has room.

        ``written`` (sector id → bytes on disk) lowers what reserved sectors have yet to
        write; without it every reservation counts in full.
        """
        args: list[object] = [sector_id, need, len(paths)]
        for each in paths:
            args += [each.path, each.free, -1 if each.capacity is None else each.capacity]
        for sector, size in (written or {}).items():
            args += [sector, size]
        return self._reserve(keys=[self._key(host)], args=args) or None

    def release(self, host: str, sector_id: str) -> bool:
        """Free the sector's reservation; False if it held none."""
        return bool(self.client.hdel(self._key(host), sector_id))
