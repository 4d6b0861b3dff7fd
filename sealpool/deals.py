"""``DealBook``: storage deals waiting for a sector, in Redis, packed first-come first-served.

Pieces follow Filecoin's rules: a piece's size is its padded size, a power of two of at least
128 bytes; a sector of S bytes holds pieces laid out in order, each at an offset that is a
multiple of its own size (the gap before it filled with zero pieces), ending at most at S —
lotus' ``GetRequiredPadding`` / ``GenerateUnsealedCID`` (storage/sealer/ffiwrapper).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from sealpool.store import Sector, SectorStore
from sealpool.store.keys import PoolKeys

MIN_PIECE_BYTES = 128  # the smallest padded piece (one Fr32 unit of 4 × 32 bytes)
_PIECE_CID = re.compile(r"baga6ea4sea[a-z2-7]{53}")  # CIDv1 base32, commP (fil-commitment-unsealed)


@dataclass(frozen=True)
class Deal:
    """A deal to seal: its id, padded piece size in bytes, piece CID and data source."""

    deal_id: int
    piece_size: int
    added_ms: int
    piece_cid: str | None = None
    source: str | None = None


def check_piece(
    piece_size: int,
    sector_bytes: int | None = None,
    *,
    piece_cid: str | None = None,
    source: str | None = None,
) -> str | None:
    """Raise ``ValueError`` (one line naming the field and value) unless the piece is valid:
    a power of two from 128 bytes up to the sector size, a commP CID, an http(s) URL or a
    readable file no larger than the piece's unpadded size. Returns the source as recorded
    (a file's absolute path)."""
    if piece_size < MIN_PIECE_BYTES or piece_size & (piece_size - 1):
        raise ValueError(
            f"piece size {piece_size}: must be a power of two of at least {MIN_PIECE_BYTES} "
            "bytes (the padded size, e.g. 8GiB)"
        )
    if sector_bytes is not None and piece_size > sector_bytes:
        raise ValueError(
            f"piece size {piece_size}: larger than the {sector_bytes}-byte sector (sector_size)"
        )
    if piece_cid is not None and not _PIECE_CID.fullmatch(piece_cid):
        raise ValueError(f"piece CID {piece_cid!r}: expected a piece CID such as baga6ea4sea…")
    if source is None:
        return None
    if urlsplit(source).scheme in ("http", "https"):
        if not urlsplit(source).netloc:
            raise ValueError(f"source {source!r}: a URL needs a host")
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"source {source!r}: neither an http(s) URL nor a readable file")
    if path.stat().st_size > piece_size // 128 * 127:
        raise ValueError(
            f"source {source!r}: {path.stat().st_size} bytes, more than a {piece_size}-byte "
            f"piece holds ({piece_size // 128 * 127} unpadded)"
        )
    return str(path.resolve())


def piece_offsets(sizes: Iterable[int]) -> list[int]:
    """The offset of each piece placed in order, each aligned to its own size (the gap
    before it is filled with zero pieces, as lotus pads)."""
    offsets, end = [], 0
    for size in sizes:
        end += -end % size
        offsets.append(end)
        end += size
    return offsets


def fits(sizes: Sequence[int], sector_bytes: int) -> bool:
    """Whether pieces of these padded sizes, in this order, fit in one sector."""
    offsets = piece_offsets(sizes)
    return not sizes or offsets[-1] + sizes[-1] <= sector_bytes


class DealBook:
    """Deals waiting to be packed into deal sectors."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        keys = PoolKeys(prefix)
        self.records = keys.deals
        self.waiting_key = keys.deals_waiting
        self.sectors_key = keys.deal_sectors

    def add(
        self,
        deal_id: int,
        piece_size: int,
        *,
        sector_bytes: int | None = None,
        piece_cid: str | None = None,
        source: str | None = None,
    ) -> Deal:
        """Add a deal to wait for a sector (checked by :func:`check_piece`; ValueError when
        invalid); adding the same deal id again changes nothing."""
        if deal_id < 0:
            raise ValueError(f"deal id {deal_id}: must not be negative")
        source = check_piece(piece_size, sector_bytes, piece_cid=piece_cid, source=source)
        seconds, micros = self.client.time()  # the pool's one clock: the server's
        now_ms = seconds * 1000 + micros // 1000
        record = {"deal_id": deal_id, "piece_size": piece_size, "added_ms": now_ms}
        record |= {"piece_cid": piece_cid, "source": source}
        if self.client.hsetnx(self.records, str(deal_id), json.dumps(record)):
            self.client.zadd(self.waiting_key, {str(deal_id): now_ms})
        return Deal(**json.loads(self.client.hget(self.records, str(deal_id))))

    def get_many(self, deal_ids: Iterable[int]) -> list[Deal]:
        """The records of these deals (waiting or not), in the order asked; unknown ones left
        out."""
        ids = [str(deal_id) for deal_id in deal_ids]
        raws = self.client.hmget(self.records, ids) if ids else []
        return [Deal(**json.loads(raw)) for raw in raws if raw]

    def waiting(self) -> list[Deal]:
        """Deals not yet in a sector, oldest first."""
        return self.get_many(int(i) for i in self.client.zrange(self.waiting_key, 0, -1))

    def waiting_count(self) -> int:
        """How many deals are not yet in a sector."""
        return self.client.zcard(self.waiting_key)

    def pack(self, sector_bytes: int) -> list[Deal]:
        """Waiting deals for one sector, oldest first, each taken if it still fits beside
        those taken; they fit in ascending deal id, the order the sector holds them."""
        packed: list[Deal] = []
        for deal in self.waiting():
            chosen = sorted([*packed, deal], key=lambda d: d.deal_id)
            if fits([d.piece_size for d in chosen], sector_bytes):
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
