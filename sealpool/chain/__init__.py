"""Chain adapters: a simulated clock by default, a Filecoin JSON-RPC node optionally."""

from __future__ import annotations

import redis

from sealpool.chain import policy
from sealpool.chain.base import Chain, RandomnessPurpose, Receipt
from sealpool.chain.rpc import RpcChain
from sealpool.chain.sim import SimChain
from sealpool.config import Settings
from sealpool.errors import ConfigError


def make_chain(
    settings: Settings, client: redis.Redis, prefix: str, miner: str | None = None
) -> Chain:
    """The chain the settings name, as seen by ``miner`` (the ``miner`` setting's if None)."""
    miner = miner or settings.miner
    if settings.chain == "rpc":
        if not settings.chain_rpc_url:
            raise ConfigError("chain = 'rpc' needs chain_rpc_url (SEALPOOL_CHAIN_RPC_URL)")
        return RpcChain(settings.chain_rpc_url, settings.chain_rpc_token, miner)
    seal_proof = policy.SEAL_PROOF[settings.sector_size]
    return SimChain(
        client, prefix, settings.time_scale, settings.sim_start_epoch, miner, seal_proof
    )


__all__ = [
    "Chain",
    "RandomnessPurpose",
    "Receipt",
    "RpcChain",
    "SimChain",
    "make_chain",
]
