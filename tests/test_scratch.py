"""The scratch ledger: concurrent sectors never overbook a temp path; what a sector reserves."""

from __future__ import annotations

import redis

from sealpool.backends.base import SECTOR_BYTES
from sealpool.storage import scratch_bytes
from sealpool.store.scratch import ScratchLedger, ScratchPath, seal_scratch_bytes


def test_reservations_stop_at_free_space_and_capacity(client: redis.Redis, prefix: str) -> None:
    ledger = ScratchLedger(client, prefix)
    paths = [ScratchPath("/a", free=100), ScratchPath("/b", free=1000, capacity=50)]
    chosen = [ledger.reserve("h", f"f01000-{n}", 40, paths) for n in range(4)]
    assert chosen == ["/a", "/a", "/b", None]  # most room first; capacity 50 holds one
    assert ledger.reserve("h", "f01000-1", 40, paths) == "/a"  # a held reservation is kept
    assert ledger.reserve("other", "f01000-9", 40, paths) == "/a"  # hosts are separate


def test_bytes_already_written_no_longer_count_against_free_space(
    client: redis.Redis, prefix: str
) -> None:
    ledger = ScratchLedger(client, prefix)
    for n in (1, 2):
        assert ledger.reserve("h", f"f01000-{n}", 40, [ScratchPath("/a", free=100)]) == "/a"
    # both sectors have written their 40 bytes: df now says 20 free
    now = [ScratchPath("/a", free=20)]
    assert ledger.reserve("h", "f01000-3", 20, now) is None  # as if nothing were written yet
    written = {"f01000-1": 40, "f01000-2": 40}
    assert ledger.reserve("h", "f01000-3", 20, now, written) == "/a"
    assert ledger.release("h", "f01000-3") and not ledger.release("h", "f01000-3")
    assert set(ledger.reservations("h")) == {"f01000-1", "f01000-2"}


def test_a_sector_reserves_lotus_seal_overheads_per_file_type(
    client: redis.Redis, prefix: str
) -> None:
    # lotus' FSOverheadSeal, in tenths of the sector size: unsealed 10, sealed 10, cache 141
    size = SECTOR_BYTES["32GiB"]
    need = scratch_bytes("external", "32GiB")
    assert need == seal_scratch_bytes(size) == size * 161 // 10  # 515.2 GiB, not 12 × 32
    ledger = ScratchLedger(client, prefix)
    assert ledger.reserve("h", "f01000-1", need, [ScratchPath("/a", free=500 << 30)]) is None
    assert ledger.reserve("h", "f01000-1", need, [ScratchPath("/a", free=520 << 30)]) == "/a"
    assert scratch_bytes("sim", "32GiB") < 1 << 20  # the sim backend writes small files
