"""A simulated chain: epochs from a shared clock, randomness from a hash, messages in Redis.

The genesis time is set once in Redis (SET NX), so every process of a farm sees the same
head. Farm time runs ``time_scale`` times faster than wall time; an epoch is 30 farm seconds.
A message lands one epoch after it was submitted.
"""

from __future__ import annotations

import hashlib
import json
import time

import redis

from sealpool.chain.base import Message, MessageKind, RandomnessPurpose
from sealpool.config import EPOCH_SECONDS


class SimChain:
    """The default chain of the demo and the tests."""

    def __init__(
        self, client: redis.Redis, prefix: str, time_scale: float = 1.0, start_epoch: int = 100_000
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.epoch_wall_s = EPOCH_SECONDS / time_scale
        self.start_epoch = start_epoch
        genesis_key = f"{prefix}:chain:genesis_ms"
        self.client.set(genesis_key, int(time.time() * 1000), nx=True)
        self.genesis_ms = int(self.client.get(genesis_key))

    def head(self) -> int:
        elapsed_s = time.time() - self.genesis_ms / 1000
        return self.start_epoch + int(elapsed_s / self.epoch_wall_s)

    def randomness(self, purpose: RandomnessPurpose, epoch: int, miner: str) -> str:
        return hashlib.sha256(f"{purpose}:{epoch}:{miner}".encode()).hexdigest()

    def submit(self, kind: MessageKind, sector_id: str, params: str) -> Message:
        record = json.dumps({"epoch": self.head(), "params": params})
        messages = f"{self.prefix}:chain:{kind}"
        self.client.hsetnx(messages, sector_id, record)
        stored = json.loads(self.client.hget(messages, sector_id))
        cid = hashlib.sha256(f"{kind}:{sector_id}:{stored['epoch']}".encode()).hexdigest()
        return Message(cid=f"sim-{cid[:46]}", sector_id=sector_id, kind=kind)

    def landed(self, message: Message) -> int | None:
        stored = self.client.hget(f"{self.prefix}:chain:{message.kind}", message.sector_id)
        if stored is None:
            return None
        landing = json.loads(stored)["epoch"] + 1
        return landing if self.head() >= landing else None

    def submitted(self, kind: MessageKind) -> dict[str, int]:
        """Every sector that sent a message of ``kind``, with the epoch it was sent at."""
        messages = self.client.hgetall(f"{self.prefix}:chain:{kind}")
        return {sector_id: json.loads(raw)["epoch"] for sector_id, raw in messages.items()}
