"""Helpers of the tests that send messages to the simulated chain."""

from __future__ import annotations

import hashlib

from sealpool.chain import Receipt, SimChain
from sealpool.chain.commitments import SEALED, commitment_cid
from sealpool.chain.messages import PreCommit
from sealpool.chain.policy import expiration

from helpers import wait_until


def precommit_of(chain: SimChain, number: int, **changes: int) -> PreCommit:
    """A precommit of sector ``number`` the actor accepts now, with ``changes`` made."""
    head = chain.head()
    fields = {
        "seal_proof": 8,
        "ticket_epoch": head - 900,
        "expiration": expiration(head, head - 900),
    }
    comm_r = commitment_cid(SEALED, hashlib.sha256(f"r{number}".encode()).digest())
    return PreCommit(number=number, comm_r=comm_r, **{**fields, **changes})  # type: ignore[arg-type]


def landed(chain: SimChain, cid: str) -> Receipt:
    """The receipt of message ``cid`` once it has landed."""
    wait_until(lambda: chain.search(cid) is not None, 30)
    receipt = chain.search(cid)
    assert receipt is not None
    return receipt
