"""One leading supervisor at a time, through a Redis lease with a fencing token.

Why a fencing token: supervisor A leads, then stalls longer than the lease; B takes over with
a larger token. When A wakes, its renewal finds B's value in the key and fails, so A knows it
no longer leads. (Every supervisor action is also idempotent in the store, so even a moment
with two leaders creates no duplicate sector and dispatches nothing twice.)
"""

from __future__ import annotations

import redis

from sealpool.store.keys import PoolKeys

# HOLD the leadership: renew it if we hold it, else take it if free.
# KEYS[1] leader key, KEYS[2] token counter; ARGV[1] our name, ARGV[2] our token or "",
# ARGV[3] lease (ms). Returns our token while we lead, or false.
HOLD = """
local current = redis.call('GET', KEYS[1])
if current and current == ARGV[2] .. ' ' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return tonumber(ARGV[2])
end
if current then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[3])
return token
"""

# RESIGN: give up leadership if we hold it. KEYS[1] leader key; ARGV[1] "<token> <name>".
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    """Leadership of a pool's supervisors, held by renewing before ``lease_s`` runs out."""

    def __init__(self, client: redis.Redis, prefix: str, name: str, lease_s: float) -> None:
        self.client, self.name, self.lease_ms = client, name, int(lease_s * 1000)
        keys = PoolKeys(prefix)
        self.keys = [keys.leader, keys.leader_term]
        self.token: int | None = None
        self._hold = client.register_script(HOLD)
        self._resign = client.register_script(RESIGN)

    def hold(self) -> bool:
        """Renew or take the lead; whether this supervisor leads now."""
        token = self._hold(keys=self.keys, args=[self.name, self.token or "", self.lease_ms])
        self.token = int(token) if token else None
        return self.token is not None

    @property
    def fence(self) -> str:
        """What the store checks, in the script of each start or creation, to act only
        while this supervisor leads (an empty fence when it doesn't, which never matches)."""
        return f"{self.token} {self.name}" if self.token is not None else ""

    def resign(self) -> None:
        if self.token is not None:
            self._resign(keys=self.keys[:1], args=[self.fence])
            self.token = None

    def leader(self) -> str | None:
        """Name of the current leader, if any."""
        value = self.client.get(self.keys[0])
        return value.split(" ", 1)[1] if value else None
