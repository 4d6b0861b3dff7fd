"""``DealBook``: storage deals waiting for a sector, in Redis, packed first-come first-served."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from sealpool.store import Sector, SectorStore
from sealpool.store.keys import PoolKeys

FR32_USABLE = 127 / 128  # unpadded bytes a sector holds per byte of sector size


@dataclass(frozen=True)
class Deal:
    """A deal to seal: its id and piece size in bytes."""

    deal_id: int
    piece_size: int
    added_ms: int


class DealBook:
    """Deals waiting to be packed into deal sectors."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        keys = PoolKeys(prefix)
        self.records = keys.deals
        self.waiting_key = keys.deals_waiting
        self.sectors_key = keys.deal_sectors

    def add(self, deal_id: int, piece_size: int) -> Deal:
        """Add a deal to wait for a sector; adding the same deal id again changes nothing."""
        if deal_id < 0 or piece_size <= 0:
            raise ValueError(f"deal {deal_id}: piece size must be positive, got {piece_size}")
        record = json.dumps(
            {"deal_id": deal_id, "piece_size": piece_size, "added_ms": int(time.time() * 1000)}
        )
        if self.client.hsetnx(self.records, str(deal_id), record):
            self.client.zadd(self.waiting_key, {str(deal_id): int(time.time() * 1000)})
        return Deal(**json.loads(self.client.hget(self.records, str(deal_id))))

    def waiting(self) -> list[Deal]:
        """Deals not yet in a sector, oldest first."""
        ids = self.client.zrange(self.waiting_key, 0, -1)
        if not ids:
            return []
        return [Deal(**json.loads(raw)) for raw in self.client.hmget(self.records, ids) if raw]

    def pack(self, sector_bytes: int) -> list[Deal]:
        """The oldest waiting deals that fit together in one sector (at least one)."""
        room = int(sector_bytes * FR32_USABLE)
        packed: list[Deal] = []
        for deal in self.waiting():
            if packed and sum(d.piece_size for d in packed) + deal.piece_size > room:
                break
            packed.append(deal)
        return packed

    def sector_of(self, deal_id: int) -> str | None:
        """The sector the deal went into (the store assigns it when it creates the sector)."""
        return self.client.hget(self.sectors_key, str(deal_id))


def sector_per_deal(
    store: SectorStore,
    miner: str,
    deal_ids: Sequence[int],
    piece_size: int,
    *,
    actor: str = "sealpool",
    request_id: str | None = None,
) -> list[Sector]:
    """Add each deal to the book and create a deal sector holding it alone (the demo's and
    the benchmarks' deal sectors); idempotent per ``request_id``."""
    book = DealBook(store.client, store.prefix)
    sectors = []
    for deal_id in deal_ids:
        book.add(deal_id, piece_size)
        request = None if request_id is None else f"{request_id}:{deal_id}"
        sectors.append(
            store.create(miner, "deal", deal_ids=[deal_id], actor=actor, request_id=request)
        )
    return sectors
