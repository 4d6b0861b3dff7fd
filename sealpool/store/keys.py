"""The Redis key schema of a pool: every key sealpool's store writes, named in one place.

All keys of a pool start with its prefix and a colon (``<prefix>:sector:f01000-7``); the
Celery queues of a pool start with the prefix and a dot (``<prefix>.pc1@host-a``), so the
two never collide. The scripts receive every key they touch in ``KEYS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealpool.store.model import parse_sector_id
from sealpool.store.states import SectorState

KINDS: tuple[str, ...] = ("deal", "cc")


@dataclass(frozen=True)
class PoolKeys:
    """Key names of the pool under ``prefix``."""

    prefix: str

    def sector(self, sector_id: str) -> str:
        """The sector's record (a hash); the id is validated first."""
        parse_sector_id(sector_id)
        return self.indexed_sector(sector_id)

    def indexed_sector(self, sector_id: str) -> str:
        """The record of a sector whose id came from a state index (valid already)."""
        return f"{self.prefix}:sector:{sector_id}"

    def listing(self, sector_id: str) -> str:
        """The sector's record as JSON, ready for listings (a string; none once the
        sector is in a terminal state)."""
        return f"{self.prefix}:listing:{sector_id}"

    def history(self, sector_id: str) -> str:
        """The sector's history (a stream)."""
        return f"{self.prefix}:history:{sector_id}"

    @property
    def history_archive(self) -> str:
        """Compacted histories of sectors that reached a final state (a stream)."""
        return f"{self.prefix}:history:archive"

    def index(self, state: SectorState | str, kind: str) -> str:
        """Ids in ``state`` of ``kind``, scored by priority then age (a sorted set)."""
        return f"{self.prefix}:state:{SectorState(state).value}:{kind}"

    def request(self, request_id: str) -> str:
        """The sector a creation request made (a string, expiring)."""
        return f"{self.prefix}:request:{request_id}"

    def sequence(self, miner: str) -> str:
        """The last sector number given to ``miner``."""
        return f"{self.prefix}:seq:{miner}"

    @property
    def fence(self) -> str:
        """The counter every lease's fencing token comes from."""
        return f"{self.prefix}:fence"

    @property
    def leases(self) -> str:
        """Running phases by lease expiry (ms)."""
        return f"{self.prefix}:leases"

    @property
    def deadlines(self) -> str:
        """Live sectors by earliest chain deadline (epoch)."""
        return f"{self.prefix}:deadlines"

    @property
    def outbox(self) -> str:
        """Queued phases whose message is not yet handed to the broker, by not-before (ms)."""
        return f"{self.prefix}:outbox"

    @property
    def unclaimed(self) -> str:
        """Queued phases whose message was sent but not yet claimed, by not-before (ms)."""
        return f"{self.prefix}:unclaimed"

    @property
    def counters(self) -> str:
        return f"{self.prefix}:counters"

    @property
    def deals(self) -> str:
        """Deal records by deal id (a hash of JSON)."""
        return f"{self.prefix}:deals"

    @property
    def deals_waiting(self) -> str:
        """Deals not yet in a sector, by arrival (a sorted set)."""
        return f"{self.prefix}:deals:waiting"

    @property
    def deal_sectors(self) -> str:
        """The sector each assigned deal went into (a hash)."""
        return f"{self.prefix}:deals:sector"

    @property
    def leader(self) -> str:
        """``<token> <name>`` of the leading supervisor (expiring)."""
        return f"{self.prefix}:supervisor:leader"

    @property
    def leader_term(self) -> str:
        """The counter leader tokens come from."""
        return f"{self.prefix}:supervisor:term"

    @property
    def last_start(self) -> str:
        """Server time (ms) of the supervisor's last sector start."""
        return f"{self.prefix}:supervisor:last_start_ms"
