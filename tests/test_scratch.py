"""The scratch ledger: concurrent sectors never overbook a temp path."""

from __future__ import annotations

import redis

from sealpool.store.scratch import ScratchLedger, ScratchPath


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
